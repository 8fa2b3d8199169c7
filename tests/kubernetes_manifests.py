"""What the deploy/kubernetes tests share: the manifests the kustomization lists, loaded once, and
the ways of finding a document, a container, the Dockerfile's instructions and what the service reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import yaml
from django.utils.module_loading import import_string
from rq.queue import Queue

from factorize_app.tasks import registry
from project.environment import DJANGO, names_read_by
from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT

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
