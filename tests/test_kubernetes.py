"""deploy/kubernetes: checked offline, since no cluster is at hand.

Every manifest validates against the Kubernetes API schemas (the kubernetes-validate package,
strict: unknown fields fail) and every KEDA ScaledObject against tests/schemas/. Then the
manifests are checked against the code they deploy: a worker Deployment and a ScaledObject for
each registered task type, the image, port, user and command of the Dockerfile, the settings'
environment variable names, the probes' URLs; and the web server is started with the
ConfigMap's settings to answer its probes as the kubelet asks.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml
from django.urls import resolve
from django.utils.module_loading import import_string
from rq.queue import Queue

from factorize_app.api.health import healthz, readyz
from factorize_app.tasks import registry, task_types
from project.environment import DJANGO, names_read_by
from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT, dead_redis_url, web_server

DEPLOY = ROOT / "deploy" / "kubernetes"
KEDA_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "keda-scaledobject.schema.json").read_text())
# The oldest Kubernetes the manifests aim at (autoscaling/v2 and policy/v1 are GA there), and the newest known.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
JOB_TIMEOUT_MARGIN = 15  # seconds a worker needs after its job to record it and deregister


def load_manifests(directory: Path = DEPLOY) -> list[tuple[str, dict]]:
    """(file name, document) for every document of every manifest the kustomization lists."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((directory / name).read_text()):
            if document is not None:
                documents.append((name, document))
    return documents


MANIFESTS = load_manifests()
KUSTOMIZATION = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def find(kind: str, name: str | None = None) -> list[dict]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict:
    (document,) = find(kind, name)
    return document


def config() -> dict[str, str]:
    return one("ConfigMap", "factorize-config")["data"]


def secret() -> dict[str, str]:
    return one("Secret", "factorize-secrets")["stringData"]


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def app_deployments() -> list[dict]:
    """The Deployments that run the project's image: the web server, the workers, the webhooks worker."""
    return [one("Deployment", "web"), *worker_deployments(), one("Deployment", "webhooks")]


def worker_deployments() -> list[dict]:
    return [doc for doc in find("Deployment") if doc["metadata"]["name"].startswith("worker-")]


def dockerfile() -> dict[str, str]:
    """The Dockerfile's instructions that the manifests must agree with."""
    text = (ROOT / "Dockerfile").read_text()
    return {
        "expose": re.search(r"^EXPOSE (\d+)", text, re.M).group(1),
        "user": re.search(r"^USER (\S+)", text, re.M).group(1),
        "port_env": re.search(r"\bPORT=(\d+)", text).group(1),
        "cmd": json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1)),
    }


def worker_name(task_name: str) -> str:
    """A type's worker Deployment and ScaledObject: Kubernetes names are DNS labels (no "_", no capitals)."""
    return "worker-" + task_name.lower().replace("_", "-")


def image_for(task_type: registry.TaskType) -> str:
    """The image a type's workers run: the service's own, or for a model with requirements of its
    own, an image built with just those (the Dockerfile's MODELS build argument)."""
    service_image = KUSTOMIZATION["images"][0]["name"]
    return f"{service_image}-{worker_name(task_type.name)}" if task_type.requirements else service_image


def shipped_task_types() -> list[registry.TaskType]:
    """The task types the manifests deploy (the ConfigMap sets no TASK_TYPES: the default ones)."""
    return [import_string(path) for path in DEFAULT_TASK_TYPES]


def names_read_by_the_service() -> set[str]:
    """Environment variables the settings read (as project/environment/ declares) and the start scripts use."""
    names = names_read_by(DJANGO)
    for script in ("start-web.sh", "serve.sh"):
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "scripts" / script).read_text()))
    return names


def missing_deployment_config(task_names: list[str], documents: list[dict]) -> list[str]:
    """What the manifests lack for these task types: a worker Deployment listening to exactly that
    queue, and a ScaledObject scaling it on that queue's Redis list."""
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in documents if s["kind"] == "ScaledObject"}
    problems = []
    for name in task_names:
        deployment = deployments.get(worker_name(name))
        if deployment is None:
            problems.append(f"no Deployment {worker_name(name)}")
        elif container(deployment).get("command") != ["python", "manage.py", "rqworker", name]:
            problems.append(f"{worker_name(name)} does not run `python manage.py rqworker {name}` (only its queue)")
        scaled_object = scaled.get(worker_name(name))
        list_names = [t["metadata"].get("listName") for t in (scaled_object or {}).get("spec", {}).get("triggers", [])]
        if Queue.redis_queue_namespace_prefix + name not in list_names:
            problems.append(
                f"no ScaledObject scaling {worker_name(name)} on {Queue.redis_queue_namespace_prefix}{name}"
            )
    return problems


@pytest.fixture
def deployed_settings(settings):
    """The settings as the deployment configures them: the ConfigMap's TASK_TYPES and timeouts."""
    raw = config().get("TASK_TYPES")
    settings.TASK_TYPES = [item.strip() for item in raw.split(",") if item.strip()] if raw else DEFAULT_TASK_TYPES
    settings.JOB_TIMEOUT = int(config().get("JOB_TIMEOUT", settings.JOB_TIMEOUT))
    registry._registry.cache_clear()
    yield settings
    registry._registry.cache_clear()


# --- schemas ---------------------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_nothing_else():
    yaml_files = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(KUSTOMIZATION["resources"]) == yaml_files
    assert KUSTOMIZATION["namespace"] == one("Namespace", "factorize")["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "document",
    [doc for _, doc in MANIFESTS if doc["kind"] != "ScaledObject"],
    ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}",
)
def test_manifest_validates_against_the_kubernetes_schema(document, version):
    kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_an_invalid_manifest():
    """The schemas are really applied: a typo and a wrong type both fail."""
    deployment = json.loads(json.dumps(one("Deployment", "web")))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment = json.loads(json.dumps(one("Deployment", "web")))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("scaled_object", find("ScaledObject"), ids=lambda doc: doc["metadata"]["name"])
def test_scaled_object_validates_against_the_keda_schema(scaled_object):
    jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled_object)
    spec = scaled_object["spec"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert one("Deployment", spec["scaleTargetRef"]["name"])  # the target exists


@pytest.mark.parametrize(
    "mistake",
    [
        lambda so: so["spec"]["triggers"][0]["metadata"].update(listLength=10),  # KEDA metadata are strings
        lambda so: so["spec"]["triggers"][0]["metadata"].pop("listName"),
        lambda so: so["spec"]["triggers"][0]["metadata"].pop("address"),
        lambda so: so["spec"]["triggers"][0]["metadata"].update(listname="rq:queue:x"),
        lambda so: so["spec"].update(minReplicas=1),
        lambda so: so.update(apiVersion="keda.k8s.io/v1alpha1"),
    ],
    ids=["unquoted-number", "no-list-name", "no-address", "misspelt-key", "unknown-field", "old-api-group"],
)
def test_the_keda_schema_refuses_broken_scaled_objects(mistake):
    scaled_object = json.loads(json.dumps(find("ScaledObject")[0]))
    mistake(scaled_object)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled_object)


def test_the_keda_schema_accepts_the_sentinel_trigger_the_readme_describes():
    scaled_object = json.loads(json.dumps(find("ScaledObject")[0]))
    scaled_object["spec"]["triggers"] = [
        {
            "type": "redis-sentinel",
            "metadata": {
                "addresses": "sentinel-0.sentinel:26379,sentinel-1.sentinel:26379",
                "sentinelMaster": "mymaster",
                "listName": "rq:queue:factorization",
                "listLength": "10",
            },
        }
    ]
    jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(scaled_object)


# --- the manifests against the code ----------------------------------------------------------


def test_every_task_type_has_a_worker_deployment_and_a_scaled_object(deployed_settings):
    names = [task_type.name for task_type in task_types()]
    assert names
    documents = [doc for _, doc in MANIFESTS]
    assert missing_deployment_config(names, documents) == []
    # ...and nothing for a task type that does not exist (a removed one, or a typo).
    assert sorted(d["metadata"]["name"] for d in worker_deployments()) == sorted(worker_name(n) for n in names)
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in find("ScaledObject")) == sorted(
        worker_name(n) for n in names
    )


def test_a_new_task_type_without_deployment_config_is_caught(deployed_settings):
    deployed_settings.TASK_TYPES = [*deployed_settings.TASK_TYPES, "tests.task_types.SLEEPY"]
    registry._registry.cache_clear()
    names = [task_type.name for task_type in task_types()]
    assert missing_deployment_config(names, [doc for _, doc in MANIFESTS]) == [
        "no Deployment worker-sleepy",
        "no ScaledObject scaling worker-sleepy on rq:queue:sleepy",
    ]


def test_worker_grace_period_outlasts_the_job_timeout(deployed_settings):
    """SIGTERM is a warm shutdown: the kubelet must not SIGKILL a worker whose job is still within its timeout."""
    for task_type in task_types():
        pod = one("Deployment", worker_name(task_type.name))["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= task_type.setting("job_timeout") + JOB_TIMEOUT_MARGIN


def test_workers_run_the_worker_as_pid_1_and_are_scaled_by_keda_only():
    for deployment in worker_deployments():
        command = container(deployment)["command"]
        assert command[:3] == ["python", "manage.py", "rqworker"], "no shell in front: python must get SIGTERM"
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_workers_are_probed_on_their_heartbeat():
    """Liveness is the worker's own heartbeat in Redis (manage.py workerhealth), not only a running
    process; the startup probe leaves time for the models to load; the limit is over the lease."""
    for deployment in worker_deployments():
        worker = container(deployment)
        for probe in ("startupProbe", "livenessProbe"):
            assert worker[probe]["exec"]["command"] == ["python", "manage.py", "workerhealth"], probe
            assert worker[probe]["timeoutSeconds"] >= 5, "a Django start takes about a second"
        startup = worker["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
        liveness = worker["livenessProbe"]
        assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30, "rides out a stop longer than a beat"
        assert "readinessProbe" not in worker, "workers serve no traffic"


def test_redis_has_a_maxmemory_so_noeviction_refuses_before_the_kernel_kills_it():
    args = container(one("StatefulSet", "redis"))["args"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--maxmemory-policy"] == "noeviction"
    maxmemory_mb = int(options["--maxmemory"].removesuffix("mb"))
    assert maxmemory_mb > 0
    limit = container(one("StatefulSet", "redis"))["resources"]["limits"]["memory"]
    assert 2 * maxmemory_mb * 2**20 <= int(limit.removesuffix("Gi")) * 2**30, "half the limit: a rewrite forks"


def test_each_worker_is_scaled_and_sized_as_its_type_declares(deployed_settings):
    """TaskType.deployment is what the cluster gets: KEDA's bounds and jobs per worker, the pod's
    requests and limits; a type scaled to zero stays warm a while after its last job."""
    for task_type in task_types():
        declared = task_type.deployment
        spec = one("ScaledObject", worker_name(task_type.name))["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (declared.min_workers, declared.max_workers)
        (trigger,) = spec["triggers"]
        assert trigger["metadata"]["listLength"] == str(declared.jobs_per_worker)
        if declared.min_workers == 0:
            assert spec["cooldownPeriod"] >= 300, "a worker scaled to zero must stay warm a while after its last job"
            assert trigger["metadata"]["activationListLength"] == "0", "one waiting job wakes it"
            assert "cold start" in (DEPLOY / "keda.yaml").read_text()
        resources = container(one("Deployment", worker_name(task_type.name)))["resources"]
        assert resources["requests"] == {"cpu": declared.cpu_request, "memory": declared.memory_request}
        gpu = {"nvidia.com/gpu": declared.gpu} if declared.gpu_required else {}
        assert resources["limits"] == {"cpu": declared.cpu, "memory": declared.memory, **gpu}


def test_image_port_user_and_command_match_the_dockerfile():
    docker = dockerfile()
    image_names = {image["name"] for image in KUSTOMIZATION["images"]}
    for deployment in app_deployments():
        pod = deployment["spec"]["template"]["spec"]
        assert container(deployment)["image"].split(":")[0] in image_names, "an image the kustomization sets"
        uid, gid = docker["user"].split(":")
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container(deployment)["securityContext"]["allowPrivilegeEscalation"] is False
    web = container(one("Deployment", "web"))
    assert "command" not in web and "args" not in web, "the web pod runs the image's CMD"
    assert docker["cmd"] == ["scripts/start-web.sh"]
    (port,) = web["ports"]
    assert str(port["containerPort"]) == docker["expose"] == docker["port_env"]
    service = one("Service", "web")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == one("Deployment", "web")["spec"]["template"]["metadata"]["labels"]


def test_a_model_with_requirements_of_its_own_runs_its_own_image(deployed_settings):
    """The web server and the types that need only the service's requirements run the service's
    image; digits (scikit-learn) runs an image with its requirements, which no other pod carries."""
    assert container(one("Deployment", "web"))["image"].split(":")[0] == KUSTOMIZATION["images"][0]["name"]
    expected = {task_type.name: image_for(task_type) for task_type in task_types()}
    for name, image in expected.items():
        assert container(one("Deployment", worker_name(name)))["image"].split(":")[0] == image, name
    assert sorted(image["name"] for image in KUSTOMIZATION["images"]) == sorted({"factorize", *expected.values()})


@pytest.mark.parametrize(
    "task_type",
    [t for t in shipped_task_types() if t.deployment.gpu and not t.deployment.gpu_required],
    ids=lambda task_type: task_type.name,
)
def test_a_worker_with_an_optional_gpu_shows_the_gpu_lines_commented_and_valid(task_type):
    """Most real models want a GPU: a type that can use one (TaskType.deployment.gpu) without
    needing it runs anywhere, and its manifest shows the GPU lines to uncomment (the limit, the GPU
    nodes' selector and taint); uncommented, the Deployment is still a valid one."""
    (text,) = [
        part
        for part in (DEPLOY / "workers.yaml").read_text().split("\n---\n")
        if f"name: {worker_name(task_type.name)}\n" in part
    ]
    plain = yaml.safe_load(text)
    assert "nvidia.com/gpu" not in container(plain)["resources"]["limits"]
    commented = re.compile(r"^(\s+)# ((?:nodeSelector:|tolerations:|nvidia\.com/gpu: |  ).*)$", re.M)
    assert len(commented.findall(text)) == 7, "the GPU lines, commented"
    uncommented = yaml.safe_load(commented.sub(r"\1\2", text))
    assert container(uncommented)["resources"]["limits"]["nvidia.com/gpu"] == task_type.deployment.gpu
    assert uncommented["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    kubernetes_validate.validate(uncommented, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes_hit_the_health_endpoints_with_an_allowed_host():
    web = container(one("Deployment", "web"))
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert inspect.unwrap(resolve("/healthz").func) is healthz and inspect.unwrap(resolve("/readyz").func) is readyz
    allowed = [host.strip() for host in config()["ALLOWED_HOSTS"].split(",")]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = web[probe]["httpGet"]
        assert http["port"] == web["ports"][0]["name"]
        hosts = [header["value"] for header in http.get("httpHeaders", []) if header["name"] == "Host"]
        assert hosts and hosts[0] in allowed, f"{probe}: the pod IP is not in ALLOWED_HOSTS; send an allowed Host"


def test_the_webhooks_worker_has_a_deployment_of_its_own_probed_on_its_heartbeat():
    deployment = one("Deployment", "webhooks")
    webhooks = container(deployment)
    assert webhooks["command"] == ["python", "manage.py", "rqworker", "webhooks"]
    assert webhooks["image"] == KUSTOMIZATION["images"][0]["name"] + ":latest", "no model: the service's image"
    for probe in ("startupProbe", "livenessProbe"):
        assert webhooks[probe]["exec"]["command"] == ["python", "manage.py", "workerhealth"]
    assert webhooks["resources"]["limits"]["memory"] and webhooks["securityContext"]["readOnlyRootFilesystem"]
    # SIGTERM waits for the attempts under way: each ends within 2 x WEBHOOK_TIMEOUT.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 2 * int(
        config()["WEBHOOK_TIMEOUT"]
    )
    assert "WEBHOOK_SECRET" in secret() and "WEBHOOK_SECRET" not in config()
    assert "WEBHOOK_ALLOWED_HOSTS" in config()


def test_env_names_are_ones_the_service_reads():
    read = names_read_by_the_service()
    assert {"REDIS_URL", "SECRET_KEY", "PRODUCTION", "ALLOWED_HOSTS", "JOB_TIMEOUT", "REDIS_SENTINELS"} <= read
    configured = set(config()) | set(secret())
    for deployment in app_deployments():
        configured |= {env["name"] for env in container(deployment).get("env", [])}
        sources = [next(iter(source.values()))["name"] for source in container(deployment)["envFrom"]]
        assert sources == ["factorize-config", "factorize-secrets"]
    assert configured - read == set(), "names that nothing reads (a typo?)"
    assert "SECRET_KEY" in secret() and "SECRET_KEY" not in config()


def test_the_example_secret_cannot_reach_production():
    """SECRET_KEY is an example (empty): with PRODUCTION=1 the service refuses to start until it is set."""
    env = {**os.environ, **config(), **secret(), "DJANGO_SETTINGS_MODULE": "project.settings"}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "SECRET_KEY" in started.stderr


def test_web_autoscaling_and_disruption_budget_target_the_web_pods():
    deployment = one("Deployment", "web")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one("HorizontalPodAutoscaler", "web")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container(deployment)["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget", "web")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a budget that leaves room to drain a node"
    for deployment in app_deployments():
        resources = container(deployment)["resources"]
        assert resources["requests"] and resources["limits"]


def test_redis_is_persistent_never_evicts_and_is_where_everything_points():
    statefulset = one("StatefulSet", "redis")
    service = one("Service", "redis")
    redis_container = container(statefulset)
    args = redis_container["args"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    maxmemory_mb = int(options["--maxmemory"].removesuffix("mb"))
    limit = redis_container["resources"]["limits"]["memory"]
    assert maxmemory_mb * 2**20 < int(limit.removesuffix("Gi")) * 2**30, "maxmemory must stay under the memory limit"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in redis_container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == options["--dir"]
    assert service["spec"]["clusterIP"] == "None" and statefulset["spec"]["serviceName"] == "redis"

    url = urlsplit(config()["REDIS_URL"])
    (port,) = service["spec"]["ports"]
    assert (url.hostname, url.port) == (service["metadata"]["name"], port["port"])
    database = url.path.lstrip("/") or "0"
    address = f"{service['metadata']['name']}.{KUSTOMIZATION['namespace']}.svc.cluster.local:{port['port']}"
    for scaled_object in find("ScaledObject"):
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["address"] == address, "KEDA runs in its own namespace: the full name"
            assert trigger["metadata"]["databaseIndex"] == database


# --- rendered and run ------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_valid_manifests_and_sets_the_image(tmp_path: Path):
    """`kubectl kustomize` (what `kubectl apply -k` applies) on an overlay that sets the image, as
    `kustomize edit set image` would: every document namespaced and valid, the new image in every app pod."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, overlay)],
                "images": [
                    {"name": name, "newName": f"registry.example.com/{name}", "newTag": "1.2.3"}
                    for name in [image["name"] for image in KUSTOMIZATION["images"]]
                ],
            }
        )
    )
    rendered = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(documents) == len(MANIFESTS)
    images = {}
    for document in documents:
        if document["kind"] == "ScaledObject":
            jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == KUSTOMIZATION["namespace"]
        if document["kind"] in ("Deployment", "StatefulSet"):
            images[document["metadata"]["name"]] = document["spec"]["template"]["spec"]["containers"][0]["image"]
    assert images.pop("redis").startswith("redis:")
    for task_type in shipped_task_types():
        image = images.pop(worker_name(task_type.name))
        assert image == f"registry.example.com/{image_for(task_type)}:1.2.3", task_type.name
    assert set(images.values()) == {"registry.example.com/factorize:1.2.3"}, "the web server and the webhooks worker"


def test_the_web_server_answers_the_probes_with_the_configmap_settings(tmp_path: Path):
    """The ConfigMap's settings (production mode, ALLOWED_HOSTS) with a real secret: the probes'
    requests, as the kubelet sends them, get 200 from /healthz and /readyz; without the Host header
    the pod IP would be refused."""
    env = {key: value for key, value in config().items() if key not in ("REDIS_URL", "WEB_CONCURRENCY")}
    env["ALLOWED_HOSTS"] += ",127.0.0.1"  # the host the test fixture itself asks with until the server answers
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    probes = container(one("Deployment", "web"))
    with web_server(**env) as url:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = probes[probe]["httpGet"]
            headers = {h["name"]: h["value"] for h in http["httpHeaders"]}
            answer = requests.get(f"{url}{http['path']}", headers=headers, timeout=10)
            assert answer.status_code == 200, (probe, answer.text)
        assert requests.get(f"{url}/healthz", headers={"Host": "10.1.2.3:8080"}, timeout=10).status_code == 400
    # ...and readiness tells a Redis outage apart from a dead process.
    with web_server(dead_redis_url(), **env) as url:
        headers = {"Host": "localhost"}
        assert requests.get(f"{url}/healthz", headers=headers, timeout=10).status_code == 200
        assert requests.get(f"{url}/readyz", headers=headers, timeout=30).status_code == 503


def test_a_web_rolling_update_takes_pods_out_before_they_stop_and_waits_for_the_drain():
    """maxUnavailable 0: a new pod is ready before an old one goes; preStop keeps the old one
    serving while the endpoints drop it; the grace period outlasts the pause and the server's stop
    (held requests answered at once, its workers killed after WEB_KILL_TIMEOUT at worst)."""
    deployment = one("Deployment", "web")
    pod, web = deployment["spec"]["template"]["spec"], container(deployment)
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    assert deployment["spec"]["minReadySeconds"] > 0
    command = web["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "coreutils' sleep, in the image (Debian-based)"
    pause = int(command[1])
    readiness = web["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz", "503 while the server stops (api/shutdown.py)"
    assert pause >= 5, "endpoints are removed asynchronously: give them a few seconds"
    default_kill = re.search(r"WEB_KILL_TIMEOUT:-(\d+)", (ROOT / "scripts" / "serve.sh").read_text()).group(1)
    kill_timeout = int(config().get("WEB_KILL_TIMEOUT", default_kill))
    assert pod["terminationGracePeriodSeconds"] > pause + kill_timeout


def test_the_web_pods_own_address_is_an_allowed_host_for_the_annotated_scrape():
    """Prometheus's annotation-based discovery scrapes <pod IP>:<port> with that as Host: the pod
    hands its address (the downward API) to POD_IP, which the settings add to ALLOWED_HOSTS."""
    deployment = one("Deployment", "web")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    web = container(deployment)
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == web["ports"][0]["containerPort"]
    (pod_ip,) = [env for env in web.get("env", []) if env["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "POD_IP" in names_read_by_the_service()
