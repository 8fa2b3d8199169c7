"""deploy/kubernetes: each task type's worker Deployment (workers.yaml), its KEDA ScaledObject
(keda.yaml) and its image (the end of kustomization.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from factorize_app.deployfiles import (
    FILES_CLAIM,
    HEADER,
    KUSTOMIZATION_FILE,
    KUSTOMIZATION_MARKER,
    DeployFilesError,
    Worker,
    comment,
)

SERVICE_IMAGE = "factorize"


@dataclass(frozen=True)
class Cluster:
    """What the generated manifests take from the hand-written ones: the namespace
    (kustomization.yaml), the Redis and the JOB_TIMEOUT the workers get (config.yaml)."""

    namespace: str
    redis_address: str  # host:port as KEDA's operator, in its own namespace, reaches it
    redis_database: str
    job_timeout: int

    @classmethod
    def read(cls, root: Path) -> Cluster:
        directory = root / Path(KUSTOMIZATION_FILE).parent
        namespace = yaml.safe_load((directory / "kustomization.yaml").read_text())["namespace"]
        data = yaml.safe_load((directory / "config.yaml").read_text())["data"]
        url = urlsplit(data["REDIS_URL"])
        if url.hostname is None:
            raise DeployFilesError("deploy/kubernetes/config.yaml: REDIS_URL names no host")
        return cls(
            namespace=namespace,
            redis_address=f"{url.hostname}.{namespace}.svc.cluster.local:{url.port or 6379}",
            redis_database=url.path.lstrip("/") or "0",
            job_timeout=int(data["JOB_TIMEOUT"]),
        )


def image(worker: Worker) -> str:
    return f"{SERVICE_IMAGE}-worker-{worker.slug}" if worker.own_image else SERVICE_IMAGE


WORKERS_PREAMBLE = f"""{HEADER}
# One Deployment per task type, each listening only to its own RQ queue, so each scales on its own
# queue length (keda.yaml). Resources, GPU and weights come from the type's declaration
# (TaskType.deployment). Types that need only the service's requirements run the service's image
# (`{SERVICE_IMAGE}`); a model with requirements of its own runs its own image
# (`{SERVICE_IMAGE}-worker-<type>`, built with `--build-arg MODELS=<type>`).
"""


def render_workers(workers: list[Worker], cluster: Cluster, *, model_dir: str, files_dir: str) -> str:
    return WORKERS_PREAMBLE + "\n" + "---\n".join(_deployment(worker, model_dir, files_dir) for worker in workers)


def _labels(worker: Worker, indent: int) -> str:
    pad = " " * indent
    return (
        f"{pad}app.kubernetes.io/name: factorize\n"
        f"{pad}app.kubernetes.io/component: worker\n"
        f"{pad}factorize/task-type: {worker.name}"
    )


def _deployment(worker: Worker, model_dir: str, files_dir: str) -> str:
    deployment = worker.task_type.deployment
    about = [comment(f"{worker.name}: {worker.task_type.description}")]
    if worker.own_image:
        about.append(
            comment(
                f"Its own image ({image(worker)}): the service's requirements plus {worker.task_type.requirements}, "
                "its model prepared at build into MODEL_DIR, so a new pod starts warm."
            )
        )
    scale = (
        f"Scaled by KEDA (keda.yaml) on its queue: {deployment.min_workers} to {deployment.max_workers} workers, "
        f"one per {deployment.jobs_per_worker} waiting jobs"
    )
    idle = "none when idle" if deployment.min_workers == 0 else f"{deployment.min_workers} always warm"
    about.append(comment(f"{scale}; {idle}."))
    gpu = deployment.gpu
    on = "" if deployment.gpu_required else "# "
    scheduling = ""
    if gpu:
        scheduling = (
            "      # A model on a GPU: schedule it on the GPU nodes (the label and taint your cluster uses).\n"
            f"      {on}nodeSelector:\n"
            f'      {on}  nvidia.com/gpu.present: "true"\n'
            f"      {on}tolerations:\n"
            f"      {on}  - key: nvidia.com/gpu\n"
            f"      {on}    operator: Exists\n"
            f"      {on}    effect: NoSchedule\n"
        )
    gpu_limit = ""
    if gpu:
        whole = "one whole GPU" if gpu == 1 else f"{gpu} whole GPUs"
        gpu_limit = (
            f"              # A model on a GPU (the NVIDIA device plugin installed): {whole} for this pod.\n"
            f"              {on}nvidia.com/gpu: {gpu}\n"
        )
    weights_mount = weights_volume = ""
    if deployment.weights:
        weights_mount = (
            "            # The model's weights (TaskType.deployment.weights): a claim you make and fill.\n"
            "            - name: weights\n"
            f"              mountPath: {model_dir}/{worker.name}\n"
            "              readOnly: true\n"
        )
        weights_volume = (
            "        - name: weights\n"
            "          persistentVolumeClaim:\n"
            f"            claimName: {deployment.weights}\n"
            "            readOnly: true\n"
        )
    return f"""{chr(10).join(about)}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker-{worker.slug}
  labels:
{_labels(worker, 4)}
spec:
  # No `replicas`: KEDA's ScaledObject worker-{worker.slug} (keda.yaml) owns the count.
  selector:
    matchLabels:
{_labels(worker, 6)}
  template:
    metadata:
      labels:
{_labels(worker, 8)}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      # SIGTERM (scale-down, rollout, node drain) is a warm shutdown: the running job finishes
      # first. {worker.timeout_words()} plus a margin, so that it is never SIGKILLed mid-job.
      terminationGracePeriodSeconds: {worker.grace_seconds}
{scheduling}      containers:
        - name: worker
          image: {image(worker)}:latest
          # No shell in between: python is PID 1 and receives SIGTERM itself.
          command: ["python", "manage.py", "rqworker", "{worker.name}"]
          envFrom:
            - configMapRef:
                name: factorize-config
            - secretRef:
                name: factorize-secrets
          # Alive means heartbeating: the worker renews its registration in Redis every
          # WORKER_HEARTBEAT (5 s); one that is stuck stops, and `workerhealth` fails once its
          # last beat is older than 3 beats (a Redis outage fails nothing: restarting would not help).
          # The startup probe gives the models time to load before the worker first registers.
          startupProbe:
            exec:
              command: ["python", "manage.py", "workerhealth"]
            periodSeconds: 5
            timeoutSeconds: 10
            failureThreshold: 60
          livenessProbe:
            exec:
              command: ["python", "manage.py", "workerhealth"]
            periodSeconds: 15
            timeoutSeconds: 10
            failureThreshold: 4
          resources:
            requests:
              cpu: {_quote(deployment.cpu_request)}
              memory: {deployment.memory_request}
            limits:
              cpu: {_quote(deployment.cpu)}
              memory: {deployment.memory}
{gpu_limit}          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            # Jobs' files (FILES_DIR), shared with the web pods (files.yaml).
            - name: files
              mountPath: {files_dir}
{weights_mount}      volumes:
        - name: tmp
          emptyDir: {{}}
        - name: files
          persistentVolumeClaim:
            claimName: {FILES_CLAIM}
{weights_volume}"""


def _quote(cpu: str) -> str:
    """A whole number of cores is written as a string, as Kubernetes prints it ("1", not 1)."""
    return f'"{cpu}"' if cpu.isdigit() else cpu


KEDA_PREAMBLE = f"""{HEADER}
# Worker autoscaling on queue length with KEDA's Redis list scaler: one ScaledObject per worker
# Deployment, reading the length of that task type's RQ queue (the Redis list rq:queue:<name>,
# the jobs waiting to run; running jobs are no longer in it). The bounds and the jobs per worker
# are the type's declaration (TaskType.deployment: min_workers, max_workers, jobs_per_worker).
#
# KEDA's operator runs in its own namespace, so `address` is the Redis Service's full DNS name
# (the namespace of kustomization.yaml); `databaseIndex` is REDIS_URL's database (config.yaml).
# A managed Redis: its host:port here (a password through a TriggerAuthentication). Redis
# Sentinel: `type: redis-sentinel` with `addresses` and `sentinelMaster` instead.
#
# Scale-down sends SIGTERM to a worker: it finishes its running job first (workers.yaml gives it
# terminationGracePeriodSeconds over its job timeout).
#
# A type scaled to zero when idle holds no memory, CPU request or GPU between bursts. The cost is a
# cold start: the first job after an idle spell waits for KEDA to notice it (up to
# pollingInterval), for a pod to be scheduled and started, and for the worker to load its model -
# typically 5 to 30 s instead of milliseconds. Clients that keep polling keep their job alive (each
# poll extends JOB_TTL); one that submits and comes back later than JOB_TTL finds it expired.
# Declare min_workers=1 for a type whose first answer must be fast.
"""


def render_keda(workers: list[Worker], cluster: Cluster) -> str:
    return KEDA_PREAMBLE + "\n" + "---\n".join(_scaled_object(worker, cluster) for worker in workers)


def _scaled_object(worker: Worker, cluster: Cluster) -> str:
    deployment = worker.task_type.deployment
    to_zero = deployment.min_workers == 0
    if to_zero:
        bounds = (
            f"  # Scaled to zero when idle; a waiting job wakes it (a cold start), up to {deployment.max_workers}.\n"
            f"  minReplicaCount: 0\n"
            f"  maxReplicaCount: {deployment.max_workers}\n"
            "  # After the queue was last non-empty, keep the warm worker this long before going to zero.\n"
            "  cooldownPeriod: 600\n"
        )
    else:
        warm = "One warm worker" if deployment.min_workers == 1 else f"{deployment.min_workers} warm workers"
        bounds = (
            f"  # {warm} at all times, up to {deployment.max_workers}.\n"
            f"  minReplicaCount: {deployment.min_workers}\n"
            f"  maxReplicaCount: {deployment.max_workers}\n"
        )
    per = deployment.jobs_per_worker
    activation = (
        "        # One waiting job is enough to wake the type up from zero.\n"
        '        activationListLength: "0"\n'
    )
    return f"""# {worker.name}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: worker-{worker.slug}
spec:
  scaleTargetRef:
    name: worker-{worker.slug}
  pollingInterval: {5 if to_zero else 10}
{bounds}  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        # Add workers quickly on a burst; remove them one a minute once the queue stays short.
        scaleDown:
          stabilizationWindowSeconds: 120
          policies:
            - type: Pods
              value: 1
              periodSeconds: 60
  triggers:
    - type: redis
      metadata:
        address: {cluster.redis_address}
        databaseIndex: "{cluster.redis_database}"
        listName: rq:queue:{worker.name}
        # Target jobs waiting per worker: {3 * per} waiting -> 3 workers (at most maxReplicaCount).
        listLength: "{per}"
{activation if to_zero else ""}"""


def render_kustomization(workers: list[Worker], current: str) -> str:
    """The hand-written part of kustomization.yaml as it is, then the images of the workers."""
    head, marker, _ = current.partition(KUSTOMIZATION_MARKER + "\n")
    if not marker:
        raise DeployFilesError(f"{KUSTOMIZATION_FILE}: no line {KUSTOMIZATION_MARKER!r} to write the images after")
    images = [SERVICE_IMAGE] + sorted({image(worker) for worker in workers if worker.own_image})
    models = [worker for worker in workers if worker.own_image]
    own = ", ".join(f"`{image(w)}`: `--build-arg MODELS={w.name}`" for w in models) or "none today"
    lines = [
        comment(
            f"The images, all from the repository's Dockerfile (docs/deployment-files.md): `{SERVICE_IMAGE}` for the "
            "web server and the workers of the types that need only the service's requirements (`--build-arg "
            f"MODELS=`), and one per model with requirements of its own ({own}). Point them at your registry with:"
        ),
        "#   cd deploy/kubernetes && kustomize edit set image \\",
        *(
            f"#     {name}=registry.example.com/{name}:1.0.0" + (" \\" if i < len(images) - 1 else "")
            for i, name in enumerate(images)
        ),
        "images:",
        *(f"  - name: {name}\n    newName: {name}\n    newTag: latest" for name in images),
    ]
    return head + marker + "\n".join(lines) + "\n"
