"""The compose files, checked without an engine, as Compose parses them (the Dockerfile: test_dockerfile.py)."""

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from factorize_app.tasks.deployment import cpu_cores
from project.environment import DJANGO, SERVER, names_read_by
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
PROXY_FILE = "deploy/compose/proxy.yml"
# Environment variables the compose file sets itself, or the image does (Dockerfile ENV): MODEL_DIR
# is where the image's models were prepared at build, so a shell's own value must not reach in.
SET_BY_COMPOSE_OR_IMAGE = {"REDIS_URL", "DATABASE_URL", "STATIC_COLLECTED", "MODEL_DIR"}
PROFILES = {
    "default": (),
    "distributed": ("--profile", "distributed"),
    "gpu": ("--profile", "gpu"),
}
# Read by the start scripts and gunicorn's settings rather than by project/settings.py.
# (HOST and PORT are the image's own: the compose file maps the port instead.)
SERVER_SETTINGS = names_read_by(SERVER) - {"HOST", "PORT"}


def compose_config(*args: str, files: tuple[str, ...] = ("docker-compose.yml",), **env: str) -> dict:
    """`docker compose config` as JSON; the environment holds only `env` (the shell's variables)."""
    result = subprocess.run(
        [str(BIN / "docker-compose"), *(f"-f{name}" for name in files), *args, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # No .env (HOME is not the project), no SECRET_KEY: the fresh-clone case.
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "COMPOSE_PROJECT_NAME": "factorize", **env},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def app_services(config: dict) -> dict[str, dict]:
    return {
        name: service for name, service in config["services"].items() if name in ("web", "webhooks") or "worker" in name
    }


def shipped_task_types() -> list:
    return [import_string(path) for path in settings.DEFAULT_TASK_TYPES]


def worker_services(task_type) -> list[str]:
    """A type's compose services: its distributed worker, and its GPU variant when a GPU is opt-in."""
    gpu = task_type.deployment.gpu and not task_type.deployment.gpu_required
    return [f"worker-{task_type.name}", *([f"worker-{task_type.name}-gpu"] if gpu else [])]


def image_suffix(task_type) -> str:
    return task_type.name.lower().replace("_", "-")


def dockerfile_env() -> set[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return {name for line in re.findall(r"^ENV (.*)$", text, re.M) for name in re.findall(r"([A-Z_]+)=", line)}


def settings_read_from_the_environment() -> set[str]:
    """The settings project/settings.py reads, as the table declares (tests/test_environment.py)."""
    return names_read_by(DJANGO)


def size_in_bytes(value: str | int) -> int:
    """Compose's byte counts ("536870912") and Redis's sizes ("256mb")."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    number, unit = re.fullmatch(r"(\d+)\s*([kmg])b?", str(value).lower()).groups()
    return int(number) * 1024 ** "kmg".index(unit) * 1024


def test_compose_file_is_valid_and_has_no_version_key():
    assert "version:" not in (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    default = compose_config()
    assert set(default["services"]) == {"redis", "web", "worker"}


def redis_options(config: dict) -> dict[str, str]:
    command = config["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return dict(zip(command[1::2], command[2::2], strict=True))


def test_redis_persists_and_never_evicts():
    redis = compose_config()["services"]["redis"]
    options = redis_options(compose_config())
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(volume["target"] == "/data" and volume["type"] == "volume" for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_redis_has_a_maxmemory_well_under_its_container_limit():
    """noeviction acts only with a maxmemory: without one Redis grows until the kernel kills it."""
    config = compose_config()
    maxmemory = size_in_bytes(redis_options(config)["--maxmemory"])
    assert maxmemory == 256 * 2**20, "the documented default (docs/deployment.md, .env.example)"
    limit = size_in_bytes(config["services"]["redis"]["deploy"]["resources"]["limits"]["memory"])
    assert limit >= 2 * maxmemory, "an append-only rewrite forks: the copied pages count against the limit"
    smaller = compose_config(REDIS_MAXMEMORY="3mb", REDIS_MEMORY="64m")
    assert redis_options(smaller)["--maxmemory"] == "3mb"
    assert size_in_bytes(smaller["services"]["redis"]["deploy"]["resources"]["limits"]["memory"]) == 64 * 2**20


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_every_service_has_memory_and_pids_limits_and_rotated_logs(profile):
    services = compose_config(*profile)["services"]
    for name, service in services.items():
        limits = service["deploy"]["resources"]["limits"]
        assert size_in_bytes(limits["memory"]) >= 128 * 2**20, name
        assert limits["pids"] >= 32, name
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}, name
    assert services["web"]["deploy"]["resources"]["limits"]["pids"] > 2 * 640, "every server thread is a pid"
    for name, service in app_services(compose_config(*profile)).items():
        if name != "web":
            assert service["deploy"]["resources"]["limits"]["cpus"] == 1, "a runaway job cannot starve the rest"


def test_limits_and_log_rotation_are_overridable_from_the_environment():
    services = compose_config(
        WEB_MEMORY="1g", WORKER_MEMORY="2g", WORKER_CPUS="0.5", WEB_PIDS="2048", LOG_MAX_SIZE="50m", LOG_MAX_FILE="5"
    )["services"]
    assert size_in_bytes(services["web"]["deploy"]["resources"]["limits"]["memory"]) == 2**30
    assert services["web"]["deploy"]["resources"]["limits"]["pids"] == 2048
    assert size_in_bytes(services["worker"]["deploy"]["resources"]["limits"]["memory"]) == 2 * 2**30
    assert services["worker"]["deploy"]["resources"]["limits"]["cpus"] == 0.5
    assert services["redis"]["logging"]["options"] == {"max-size": "50m", "max-file": "5"}


def test_web_publishes_8123_on_loopback_only_and_waits_for_redis():
    web = compose_config()["services"]["web"]
    (port,) = web["ports"]
    assert {k: port[k] for k in ("host_ip", "published", "target")} == {
        "host_ip": "127.0.0.1",
        "published": "8123",
        "target": 8080,
    }
    assert compose_config(WEB_BIND="0.0.0.0")["services"]["web"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    # No secret in the file, and no empty value either: unset, the development default in settings.
    assert web["environment"]["SECRET_KEY"] is None


def test_worker_is_scalable():
    config = compose_config()
    worker = config["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == ["python", "manage.py", "rqworker"]


def test_the_web_image_has_no_model_and_the_worker_for_every_queue_has_them_all():
    """`docker compose up`: one worker for every queue, digits included, in an image with every
    model's requirements; the web server's image is built with none."""
    services = compose_config()["services"]
    web, worker = services["web"], services["worker"]
    assert web["build"]["args"]["MODELS"] == ""
    assert worker["build"]["args"]["MODELS"] == "all"
    assert worker["image"] == "factorize-worker" and web["image"] == "factorize-app"
    assert worker["pull_policy"] == "missing", "built when missing, like the web's"


def test_distributed_workers_run_an_image_with_only_their_own_model():
    """A model with requirements of its own gets an image built with only those (MODELS=<type>);
    the other types' workers run the web server's image, which has no model's requirements."""
    services = compose_config("--profile", "distributed")["services"]
    for task_type in shipped_task_types():
        service = services[f"worker-{task_type.name}"]
        if task_type.requirements:
            assert service["build"]["args"] == {"MODELS": task_type.name}
            assert service["image"] == f"factorize-worker-{image_suffix(task_type)}"
            assert service["build"]["context"] == services["web"]["build"]["context"]
            assert service["pull_policy"] == "missing", "built when missing"
        else:
            assert "build" not in service and service["image"] == services["web"]["image"]
            assert service["pull_policy"] == "never", "the image the web service builds"


def test_a_gpu_is_reserved_only_under_the_gpu_profile():
    """Most real models want a GPU: `--profile gpu` shows how a model's worker reserves one; every
    other configuration reserves none, so `docker compose up` runs on any host."""
    required = {f"worker-{t.name}" for t in shipped_task_types() if t.deployment.gpu_required}
    for name in ("default", "distributed"):
        for service_name, service in compose_config(*PROFILES[name])["services"].items():
            reserved = "reservations" in service.get("deploy", {}).get("resources", {})
            assert reserved == (service_name in required), (name, service_name)
    services = compose_config("--profile", "gpu")["services"]
    distributed = compose_config("--profile", "distributed")["services"]
    optional = [t for t in shipped_task_types() if t.deployment.gpu and not t.deployment.gpu_required]
    assert set(services) - set(compose_config()["services"]) == {f"worker-{t.name}-gpu" for t in optional}
    for task_type in optional:
        gpu = services[f"worker-{task_type.name}-gpu"]
        assert gpu["profiles"] == ["gpu"]
        (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "count": task_type.deployment.gpu, "capabilities": ["gpu"]}
        assert gpu["command"] == ["python", "manage.py", "rqworker", task_type.name]
        same = distributed[f"worker-{task_type.name}"]
        assert gpu["image"] == same["image"] and gpu.get("build") == same.get("build")
        assert gpu["deploy"]["resources"]["limits"] == same["deploy"]["resources"]["limits"]


def test_the_images_are_named_after_the_compose_project():
    """Two checkouts (or `-p` projects) on one engine build two sets of images instead of overwriting one."""
    for project, config in (
        ("first", compose_config("--profile", "distributed", COMPOSE_PROJECT_NAME="first")),
        ("second", compose_config("-p", "second", "--profile", "distributed")),
    ):
        images = {s["image"] for s in app_services(config).values()}
        models = {f"{project}-worker-{image_suffix(t)}" for t in shipped_task_types() if t.requirements}
        assert images == {f"{project}-app", f"{project}-worker", *models}


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_workers_are_health_checked_on_their_heartbeat(profile):
    for name, service in app_services(compose_config(*profile)).items():
        if name == "web":
            assert "healthcheck" not in service or not service["healthcheck"].get("disable"), "the image's /healthz"
            continue
        check = service["healthcheck"]
        assert check["test"] == ["CMD", "python", "manage.py", "workerhealth"], name
        assert not check.get("disable")
        assert check["start_period"], "time to load the models before the worker first registers"
    assert (ROOT / "factorize_app" / "management" / "commands" / "workerhealth.py").exists()


def test_production_and_every_setting_pass_from_the_shell_into_the_containers():
    shipped = compose_config()
    configured = compose_config(PRODUCTION="1", SECRET_KEY="k" * 60, JOB_TTL="120", LOG_FORMAT="text")
    for name, service in app_services(configured).items():
        assert service["environment"]["PRODUCTION"] == "1", name
        assert service["environment"]["SECRET_KEY"] == "k" * 60
        assert service["environment"]["JOB_TTL"] == "120"
        assert service["environment"]["LOG_FORMAT"] == "text"
        # Unset outside: unset inside (an empty value would override the settings' default).
        assert shipped["services"][name]["environment"]["JOB_TTL"] is None
    set_here = dockerfile_env() | set(shipped["services"]["web"]["environment"])
    assert set_here >= SET_BY_COMPOSE_OR_IMAGE, "set by the image or the compose file, as it claims"
    expected = (settings_read_from_the_environment() - SET_BY_COMPOSE_OR_IMAGE) | SERVER_SETTINGS
    assert {"PRODUCTION", "SECRET_KEY", "ALLOWED_HOSTS", "TRUSTED_PROXIES", "CLIENT_IP_HEADER"} <= expected
    for name, service in app_services(shipped).items():
        missing = expected - set(service["environment"])
        assert not missing, f"{name}: settings that cannot be set from the shell: {sorted(missing)}"


def test_the_proxy_recipe_is_the_only_way_in_and_the_only_trusted_address():
    config = compose_config(files=("docker-compose.yml", PROXY_FILE))
    web, proxy = config["services"]["web"], config["services"]["proxy"]
    assert not web.get("ports"), "the web server is reachable through the proxy only"
    (published,) = proxy["ports"]
    assert published["target"] == 8080 and published["published"] == "8080"
    address = proxy["networks"]["default"]["ipv4_address"]
    (subnet,) = config["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    assert web["environment"]["TRUSTED_PROXIES"] == address
    header = web["environment"]["CLIENT_IP_HEADER"]
    (mount,) = proxy["volumes"]
    haproxy = Path(mount["source"]).read_text()
    assert mount["target"] == "/usr/local/etc/haproxy/haproxy.cfg" and mount["read_only"] is True
    assert f"http-request set-header {header} %[src]" in haproxy, "the proxy sets (replaces) the trusted header"
    assert "bind :8080" in haproxy and "web:8080" in haproxy
    assert proxy["logging"]["options"] and proxy["deploy"]["resources"]["limits"]["memory"]
    # The workers are unchanged; the settings still pass through.
    assert (
        compose_config(files=("docker-compose.yml", PROXY_FILE), PRODUCTION="1")["services"]["worker"]["environment"][
            "PRODUCTION"
        ]
        == "1"
    )


def test_distributed_profile_has_one_worker_service_per_task_type():
    """deploy/compose/workers.yml (make deploy-files): a worker for each type's queue alone, with the
    limits the type declares, and no service for a type that is not registered."""
    services = compose_config("--profile", "distributed")["services"]
    shipped = shipped_task_types()
    assert shipped
    assert {name for name in services if name.startswith("worker-")} == {f"worker-{t.name}" for t in shipped}
    for task_type in shipped:
        service = services[f"worker-{task_type.name}"]
        assert service["command"] == ["python", "manage.py", "rqworker", task_type.name]
        assert service["profiles"] == ["distributed"]
        assert "container_name" not in service
        limits = service["deploy"]["resources"]["limits"]
        assert size_in_bytes(limits["memory"]) == size_in_bytes(task_type.deployment.memory.replace("i", ""))
        assert limits["cpus"] == float(cpu_cores(task_type.deployment.cpu))


def test_the_webhooks_worker_has_a_service_of_its_own_in_the_service_image():
    services = compose_config("--profile", "distributed")["services"]
    webhooks = services["webhooks"]
    assert webhooks["command"] == ["python", "manage.py", "rqworker", "webhooks"]
    assert webhooks["profiles"] == ["distributed"]
    assert webhooks["image"] == services["web"]["image"], "no model: the service's own image"
    assert webhooks["healthcheck"]["test"] == ["CMD", "python", "manage.py", "workerhealth"]
    assert webhooks["deploy"]["resources"]["limits"] == services["worker"]["deploy"]["resources"]["limits"]
    assert {"WEBHOOK_SECRET", "WEBHOOK_ALLOWED_HOSTS", "WEBHOOK_TIMEOUT"} <= set(webhooks["environment"])
    # Without the profile, the every-queue `worker` sends them (`rqworker` runs the webhooks worker too).
    assert "webhooks" not in compose_config()["services"]


@pytest.mark.parametrize("name", [".env.example"])
def test_env_example_holds_no_secret(name):
    values = dict(
        line.split("=", 1) for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")
    )
    assert values["SECRET_KEY"] == ""
    assert values["DJANGO_SUPERUSER_PASSWORD"] == ""


def test_every_file_the_compose_files_name_exists():
    """The header once sent operators to deploy/compose.proxy.yml, which never existed."""
    for name in ("docker-compose.yml", PROXY_FILE):
        named = re.findall(r"\b((?:deploy|scripts|docs|tests)/[\w./-]*\w)", (ROOT / name).read_text())
        assert named
        for path in named:
            assert (ROOT / path).exists(), f"{name} names {path}, which does not exist"


def test_behind_the_proxy_the_web_runs_replicas_that_stop_gracefully():
    """Two replicas (one serves while the other is replaced, scripts/rolling-upgrade.sh), ready
    only when /readyz answers (503 while stopping), and given longer to stop than the server's own
    kill timeout, so a stop is the server's drain, never docker's SIGKILL."""
    web = compose_config(files=("docker-compose.yml", PROXY_FILE))["services"]["web"]
    assert web["deploy"]["replicas"] >= 2
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    kill_timeout = int(re.search(r"WEB_KILL_TIMEOUT:-(\d+)", (ROOT / "scripts" / "serve.sh").read_text()).group(1))
    assert int(web["stop_grace_period"].removesuffix("s")) > kill_timeout
    assert "WEB_KILL_TIMEOUT" in web["environment"], "settable from the shell"
