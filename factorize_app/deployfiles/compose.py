"""deploy/compose/workers.yml: one worker service per task type, included by docker-compose.yml."""

from __future__ import annotations

from factorize_app.deployfiles import HEADER, Worker, comment
from factorize_app.tasks.deployment import compose_memory, cpu_cores

PREAMBLE = f"""{HEADER}
# docker-compose.yml includes this file, so `docker compose` needs no -f for it. One worker service
# per task type under the `distributed` profile, each listening to its own queue only and scaled on
# its own, e.g.:
#   docker compose --profile distributed up --scale worker=0 --scale worker-primes=3
# Each extends docker-compose.yml's every-queue `worker` (settings, health check, logs, pids, the
# volume of jobs' files `job-files`, shared with the web service) with
# the limits its type declares (TaskType.deployment), overridable from the shell or .env
# (WORKER_<TYPE>_MEMORY, WORKER_<TYPE>_CPUS). Compose has no autoscaler: min_workers and
# max_workers apply on Kubernetes (deploy/kubernetes/keda.yaml).
"""


def render(workers: list[Worker], *, model_dir: str) -> str:
    services = "\n".join(_service(worker, model_dir) + _gpu_service(worker) for worker in workers)
    volumes = [worker.task_type.deployment.weights for worker in workers if worker.task_type.deployment.weights]
    text = f"{PREAMBLE}\nservices:\n{services}"
    if volumes:
        text += "\n# The weights volumes: made and filled by the operator (`docker volume create`).\nvolumes:\n"
        text += "".join(f"  {name}:\n    external: true\n" for name in sorted(set(volumes)))
    return text


def _service(worker: Worker, model_dir: str) -> str:
    deployment = worker.task_type.deployment
    lines = [comment(f"{worker.name}: {worker.task_type.description}", 2)]
    if worker.own_image:
        lines.append(
            comment(
                f"Its own image: the service's requirements plus {worker.task_type.requirements}, its model "
                f"prepared at build (the Dockerfile's MODELS={worker.name}).",
                2,
            )
        )
    else:
        lines.append("  # The web service's image: this type needs only the service's requirements.")
    if deployment.gpu_required:
        lines.append(comment(f"Needs {_gpus(deployment.gpu)}: an NVIDIA driver and the NVIDIA Container Toolkit.", 2))
    prefix = worker.env_prefix
    lines += [
        f"  worker-{worker.name}:",
        "    extends:",
        "      file: docker-compose.yml",
        "      service: worker",
        "    profiles: [distributed]",
    ]
    if worker.own_image:
        lines += [
            f"    image: ${{COMPOSE_PROJECT_NAME}}-worker-{worker.slug}",
            "    pull_policy: missing  # built from `build:` when it is not there yet",
            "    build:",
            "      context: .",
            "      args:",
            f"        MODELS: {worker.name}",
        ]
    else:
        lines += [
            "    image: ${COMPOSE_PROJECT_NAME}-app",
            "    pull_policy: never  # the image the web service builds",
            "    build: !reset null",
        ]
    lines.append(f'    command: ["python", "manage.py", "rqworker", "{worker.name}"]')
    if worker.task_type.job_timeout is not None:
        lines.append(f"    stop_grace_period: {worker.grace_seconds}s  # {worker.timeout_words()} plus a margin")
    lines += [
        "    deploy:",
        "      resources:",
        "        limits:",
        f"          memory: ${{{prefix}_MEMORY:-{compose_memory(deployment.memory)}}}",
        f'          cpus: "${{{prefix}_CPUS:-{cpu_cores(deployment.cpu)}}}"',
    ]
    if deployment.gpu_required:
        lines += _reservation(deployment.gpu, indent=8)
    if deployment.weights:
        lines += [
            f"    # The model's weights, from the volume {deployment.weights} (TaskType.deployment.weights).",
            "    volumes:",
            "      - type: volume",
            f"        source: {deployment.weights}",
            f"        target: {model_dir}/{worker.name}",
            "        read_only: true",
        ]
    return "\n".join(lines) + "\n"


def _gpu_service(worker: Worker) -> str:
    """An opt-in GPU variant under the `gpu` profile, so that `docker compose up` runs on any host."""
    deployment = worker.task_type.deployment
    if deployment.gpu == 0 or deployment.gpu_required:
        return ""
    lines = [
        "",
        comment(
            f"The same worker with {_gpus(deployment.gpu)} reserved for it, under a profile of its own so that "
            "`docker compose up` runs on any host. Needs an NVIDIA driver and the NVIDIA Container Toolkit on "
            f"the host; without them the container does not start:  docker compose --profile gpu up --scale "
            f"worker=0 worker-{worker.name}-gpu",
            2,
        ),
        f"  worker-{worker.name}-gpu:",
        "    extends:",
        f"      service: worker-{worker.name}",
        "    profiles: !override [gpu]  # not also distributed, as it would be from worker-" + worker.name,
        "    deploy:",
        "      resources:",
        *_reservation(deployment.gpu, indent=8),
    ]
    return "\n".join(lines) + "\n"


def _reservation(count: int, *, indent: int) -> list[str]:
    pad = " " * indent
    return [
        f"{pad}reservations:",
        f"{pad}  devices:",
        f"{pad}    - driver: nvidia",
        f"{pad}      count: {count}",
        f"{pad}      capabilities: [gpu]",
    ]


def _gpus(count: int) -> str:
    return "a GPU" if count == 1 else f"{count} GPUs"
