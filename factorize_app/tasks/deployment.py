"""What a task type needs where it is deployed, declared with the type (`TaskType.deployment`).

`make deploy-files` (manage.py deployfiles) writes each type's worker service in Docker Compose
and its worker Deployment, KEDA ScaledObject and image entry in Kubernetes from this declaration,
so that a new model is one folder and one command, never a copied and renamed block of YAML.
Plain data: no Django, no Redis; checked when the declaration is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kubernetes quantities, in the forms the generated files use: CPU in cores ("1", "2") or
# millicores ("500m"); memory in mebibytes or gibibytes ("512Mi", "4Gi").
_CPU = re.compile(r"(?:[1-9][0-9]*|[1-9][0-9]*m)")
_MEMORY = re.compile(r"[1-9][0-9]*(?:Mi|Gi)")
# A Docker volume and a Kubernetes PersistentVolumeClaim name alike (DNS-1123 label).
_VOLUME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def cpu_cores(quantity: str) -> str:
    """"500m" -> "0.5", "2" -> "2": a Kubernetes CPU quantity as Compose's `cpus`."""
    if quantity.endswith("m"):
        return f"{int(quantity[:-1]) / 1000:g}"
    return quantity


def compose_memory(quantity: str) -> str:
    """"512Mi" -> "512m", "4Gi" -> "4g": Compose counts in binary units too."""
    return quantity[:-2] + quantity[-2].lower()


@dataclass(frozen=True)
class Deployment:
    """One worker of the type: its resources, how many there may be, and where its weights are.

    The defaults fit a type that needs only the service's requirements and little memory."""

    # Resources of one worker (Kubernetes quantities). The request is what the scheduler sets aside
    # (and what the worker uses when idle); the limit is the most it may take: a worker over its
    # memory limit is killed, and its job retried. Compose applies the limits.
    cpu: str = "1"
    memory: str = "512Mi"
    cpu_request: str = "500m"
    memory_request: str = "256Mi"
    # NVIDIA GPUs one worker uses on a GPU host. With gpu_required False the worker runs on any
    # host and the GPU is opt-in (Compose: a `worker-<type>-gpu` service under the `gpu` profile;
    # Kubernetes: the GPU lines written commented out); True: its workers always get them.
    gpu: int = 0
    gpu_required: bool = False
    # Kubernetes (KEDA) scales the workers on the type's queue length: min_workers 0 scales to zero
    # when idle (a cold start for the next job); at least 1 keeps a worker warm. One worker is
    # added per jobs_per_worker waiting jobs, up to max_workers.
    min_workers: int = 0
    max_workers: int = 5
    jobs_per_worker: int = 10
    # None: the model's weights are in its image (made at build by `python -m <package>.model` into
    # MODEL_DIR) or it has none. A name: a volume holding them, made and filled by the operator (a
    # Docker volume; a Kubernetes PersistentVolumeClaim), mounted read-only at MODEL_DIR/<type>.
    weights: str | None = None

    def __post_init__(self) -> None:
        for name in ("cpu", "cpu_request"):
            if not _CPU.fullmatch(getattr(self, name)):
                raise ValueError(f"Deployment.{name}: {getattr(self, name)!r} is not a CPU quantity like '1' or '500m'")
        for name in ("memory", "memory_request"):
            if not _MEMORY.fullmatch(getattr(self, name)):
                raise ValueError(f"Deployment.{name}: {getattr(self, name)!r} is not a size like '512Mi' or '4Gi'")
        if _millicores(self.cpu_request) > _millicores(self.cpu):
            raise ValueError("Deployment.cpu_request is more than the limit (Deployment.cpu)")
        if _mebibytes(self.memory_request) > _mebibytes(self.memory):
            raise ValueError("Deployment.memory_request is more than the limit (Deployment.memory)")
        if self.gpu < 0 or (self.gpu_required and self.gpu == 0):
            raise ValueError("Deployment.gpu: a number of GPUs, at least 1 when gpu_required")
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise ValueError("Deployment: 0 <= min_workers <= max_workers, and max_workers >= 1")
        if self.jobs_per_worker < 1:
            raise ValueError("Deployment.jobs_per_worker: at least 1")
        if self.weights is not None and not _VOLUME.fullmatch(self.weights):
            raise ValueError(f"Deployment.weights: {self.weights!r} is not a volume name (a-z, 0-9 and '-')")


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(quantity) * 1000


def _mebibytes(quantity: str) -> int:
    return int(quantity[:-2]) * (1024 if quantity.endswith("Gi") else 1)
