"""deploy/kubernetes against the code it deploys, checked offline since no cluster is at hand: a
worker Deployment and a ScaledObject for each registered task type, the image, port, user and
command of the Dockerfile, the settings' environment variable names, the probes' URLs. The schemas
and the rendered manifests: test_kubernetes_schemas.py.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from django.urls import resolve

from factorize_app.api.health import healthz, readyz
from factorize_app.tasks import registry, task_types
from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT
from tests.kubernetes_manifests import (
    DEPLOY,
    JOB_TIMEOUT_MARGIN,
    KUBERNETES_VERSIONS,
    KUSTOMIZATION,
    MANIFESTS,
    app_deployments,
    config,
    container,
    dockerfile,
    find,
    image_for,
    missing_deployment_config,
    names_read_by_the_service,
    one,
    secret,
    shipped_task_types,
    worker_deployments,
    worker_name,
)


@pytest.fixture
def deployed_settings(settings):
    """The settings as the deployment configures them: the ConfigMap's TASK_TYPES and timeouts."""
    raw = config().get("TASK_TYPES")
    settings.TASK_TYPES = [item.strip() for item in raw.split(",") if item.strip()] if raw else DEFAULT_TASK_TYPES
    settings.JOB_TIMEOUT = int(config().get("JOB_TIMEOUT", settings.JOB_TIMEOUT))
    registry._registry.cache_clear()
    yield settings
    registry._registry.cache_clear()


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
