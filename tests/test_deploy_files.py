"""`make deploy-files`: the per-model Compose and Kubernetes files come from the task types' declarations.

The committed files are what the generator writes for the registry now; a model added to the
registry (a test type, and a model declared here with every deployment option) gets a Compose worker
service, a worker Deployment, a ScaledObject and an image, valid against the Kubernetes and KEDA
schemas and as `docker compose config` reads them; the declaration refuses values that would deploy
wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.utils.module_loading import import_string
from rest_framework import serializers

from factorize_app import deployfiles
from factorize_app.tasks import TaskType, registry, task_types
from factorize_app.tasks.deployment import Deployment
from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT
from tests.kubernetes_manifests import (
    KEDA_SCHEMA,
    KUBERNETES_VERSIONS,
    container,
    load_manifests,
    missing_deployment_config,
)

GENERATED = (
    deployfiles.COMPOSE_FILE,
    deployfiles.WORKERS_FILE,
    deployfiles.KEDA_FILE,
    deployfiles.KUSTOMIZATION_FILE,
)
# What the generator reads besides the registry: copied into a scratch project to write into.
HAND_WRITTEN = ("Dockerfile", "docker-compose.yml", "deploy/kubernetes", "deploy/compose")


class BigInput(serializers.Serializer):
    text = serializers.CharField(max_length=100)


class BigResult(serializers.Serializer):
    label = serializers.CharField()


# A model that uses every declaration field: its own requirements (so its own image), two GPUs it
# cannot run without, weights on a volume, more memory, two warm workers and a long timeout.
BIG_MODEL = TaskType(
    name="big_model",
    path="big-model",
    description="Label a text with a large model on two GPUs.",
    input_serializer=BigInput,
    result_serializer=BigResult,
    implementation="tests.task_types:Echo",
    requirements="factorize_app/tasks/big_model/requirements.txt",
    job_timeout=900,
    deployment=Deployment(
        cpu="4",
        memory="16Gi",
        cpu_request="2",
        memory_request="12Gi",
        gpu=2,
        gpu_required=True,
        min_workers=2,
        max_workers=4,
        jobs_per_worker=3,
        weights="big-model-weights",
    ),
)
# A model whose GPU is opt-in, on a CPU by default.
MAYBE_GPU = TaskType(
    name="maybe-gpu",
    path="maybe-gpu",
    description="Anything, faster on a GPU.",
    input_serializer=BigInput,
    result_serializer=BigResult,
    implementation="tests.task_types:Echo",
    deployment=Deployment(gpu=1),
)
# The GPU lines of a Deployment, commented out: the node selector, the tolerations and the limit.
GPU_LINES = re.compile(r"^(\s+)# ((?:nodeSelector:|tolerations:|nvidia\.com/gpu: |  ).*)$", re.M)
ADDED = ["tests.task_types.SLEEPY", "tests.task_types.SLOW_SETUP", "tests.test_deploy_files.BIG_MODEL",
         "tests.test_deploy_files.MAYBE_GPU"]  # fmt: skip


@pytest.fixture
def registered(settings):
    """Set the registry to these TASK_TYPES entries; the task types, back to normal afterwards."""

    def use(paths: list[str]) -> list[TaskType]:
        settings.TASK_TYPES = paths
        registry._registry.cache_clear()
        return task_types()

    yield use
    registry._registry.cache_clear()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch copy of the project's hand-written deployment files (and today's generated ones)."""
    for name in HAND_WRITTEN:
        source, target = ROOT / name, tmp_path / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return tmp_path


def manage(*args: str, task_types: list[str]) -> subprocess.CompletedProcess:
    """manage.py with the service's settings and these TASK_TYPES (the test settings add test types)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "TASK_TYPES": ",".join(task_types)}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def compose_config(directory: Path, *profiles: str) -> dict:
    """`docker compose config` of the docker-compose.yml there, as an operator runs it (no -f)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "docker-compose"), *(f"--profile={p}" for p in profiles), "config",
         "--format", "json"],
        cwd=directory, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "COMPOSE_PROJECT_NAME": "factorize"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the committed files ---------------------------------------------------------------------


def test_the_committed_files_are_what_make_deploy_files_writes(registered):
    shipped = registered(DEFAULT_TASK_TYPES)
    rendered = deployfiles.render(shipped, ROOT)
    assert sorted(rendered) == sorted(GENERATED)
    for path, text in rendered.items():
        assert (ROOT / path).read_text() == text, f"{path} is out of date: run `make deploy-files`"
    assert deployfiles.stale(shipped, ROOT) == []


def test_generated_files_say_so_and_the_hand_written_part_stays(registered):
    rendered = deployfiles.render(registered(DEFAULT_TASK_TYPES), ROOT)
    for path in (deployfiles.COMPOSE_FILE, deployfiles.WORKERS_FILE, deployfiles.KEDA_FILE):
        assert rendered[path].splitlines()[0] == (
            "# generated by make deploy-files from factorize_app/tasks/*; do not edit"
        ), path
    kustomization = (ROOT / deployfiles.KUSTOMIZATION_FILE).read_text()
    hand_written = kustomization.split(deployfiles.KUSTOMIZATION_MARKER)[0]
    assert rendered[deployfiles.KUSTOMIZATION_FILE].startswith(hand_written + deployfiles.KUSTOMIZATION_MARKER)
    assert "resources:" in hand_written and "images:" not in hand_written
    # docker-compose.yml includes the generated services, so `docker compose up` needs no -f.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["include"] == [{"path": deployfiles.COMPOSE_FILE, "project_directory": "."}]


def test_check_names_the_stale_files_and_exits_1_until_they_are_written(project: Path):
    workers = project / deployfiles.WORKERS_FILE
    workers.write_text(workers.read_text().replace("cpu: 250m", "cpu: 300m"))  # a hand edit
    (project / deployfiles.COMPOSE_FILE).unlink()
    checked = manage("deployfiles", "--check", "--root", str(project), task_types=DEFAULT_TASK_TYPES)
    assert checked.returncode == 1
    assert deployfiles.WORKERS_FILE in checked.stderr and deployfiles.COMPOSE_FILE in checked.stderr
    assert deployfiles.KEDA_FILE not in checked.stderr
    assert "cpu: 300m" in workers.read_text(), "--check writes nothing"
    written = manage("deployfiles", "--root", str(project), task_types=DEFAULT_TASK_TYPES)
    assert written.returncode == 0, written.stderr
    assert written.stdout.split() == ["wrote", deployfiles.COMPOSE_FILE, "wrote", deployfiles.WORKERS_FILE]
    assert workers.read_text() == (ROOT / deployfiles.WORKERS_FILE).read_text()
    again = manage("deployfiles", "--check", "--root", str(project), task_types=DEFAULT_TASK_TYPES)
    assert again.returncode == 0 and "up to date" in again.stdout


# --- a model added -----------------------------------------------------------------------------


@pytest.fixture
def added(registered, project: Path) -> dict:
    """The shipped types plus the added ones, written into the scratch project: the manifests
    kustomize would apply, and the compose configuration under each profile."""
    types = registered(DEFAULT_TASK_TYPES + ADDED)
    deployfiles.write(types, project)
    documents = [document for _, document in load_manifests(project / "deploy" / "kubernetes")]
    return {
        "types": types,
        "documents": documents,
        "by_name": {(d["kind"], d["metadata"]["name"]): d for d in documents},
        "kustomization": yaml.safe_load((project / deployfiles.KUSTOMIZATION_FILE).read_text()),
        "compose": {profile: compose_config(project, *profile) for profile in [(), ("distributed",), ("gpu",)]},
        "text": {path: (project / path).read_text() for path in GENERATED},
    }


def test_an_added_model_gets_a_worker_deployment_and_a_scaled_object_on_its_queue(added):
    names = [task_type.name for task_type in added["types"]]
    assert {"sleepy", "slow_setup", "big_model", "maybe-gpu"} <= set(names)
    assert missing_deployment_config(names, added["documents"]) == []
    # Kubernetes names are DNS labels: the type's name in lower case with "-" for "_".
    assert ("Deployment", "worker-slow-setup") in added["by_name"]
    assert container(added["by_name"]["Deployment", "worker-slow-setup"])["command"][-1] == "slow_setup"
    for document in added["documents"]:
        if document["kind"] == "ScaledObject":
            jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def test_an_added_models_declaration_is_what_its_manifests_say(added):
    deployment = added["by_name"]["Deployment", "worker-big-model"]
    pod = deployment["spec"]["template"]["spec"]
    worker = container(deployment)
    assert worker["image"] == "factorize-worker-big-model:latest", "its own image: it has requirements"
    assert worker["resources"] == {
        "requests": {"cpu": "2", "memory": "12Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 2},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["terminationGracePeriodSeconds"] == 900 + 30, "its own job_timeout plus the margin"
    mounts = {mount["name"]: mount for mount in worker["volumeMounts"]}
    assert mounts["weights"] == {"name": "weights", "mountPath": "/app/models/big_model", "readOnly": True}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "big-model-weights", "readOnly": True}
    scaled = added["by_name"]["ScaledObject", "worker-big-model"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 4)
    assert scaled["triggers"][0]["metadata"]["listLength"] == "3"
    assert "activationListLength" not in scaled["triggers"][0]["metadata"] and "cooldownPeriod" not in scaled
    images = [image["name"] for image in added["kustomization"]["images"]]
    assert images == ["factorize", "factorize-worker-big-model", "factorize-worker-digits"]
    # A type with no requirements of its own and no GPU: the service's image, nothing scheduled on a GPU.
    sleepy = added["by_name"]["Deployment", "worker-sleepy"]
    assert container(sleepy)["image"] == "factorize:latest" and "nodeSelector" not in sleepy["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in container(sleepy)["resources"]["limits"]
    assert sleepy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 3 + 30


def test_an_added_models_comments_describe_its_own_declaration(added):
    """The generated comments are about each model: its description, bounds and timeout."""
    workers = added["text"][deployfiles.WORKERS_FILE].split("\n---\n")
    (big,) = [part for part in workers if "name: worker-big-model" in part]
    assert "# big_model: Label a text with a large model on two GPUs." in big
    assert "on its queue: 2 to 4 workers, one per 3 waiting jobs; 2 always warm." in big
    assert "its job_timeout (900 s) plus a margin" in big
    assert "factorize_app/tasks/big_model/requirements.txt" in big
    (sleepy,) = [part for part in workers if "name: worker-sleepy" in part]
    assert "0 to 5 workers, one per 10 waiting jobs; none when idle." in sleepy and "big_model" not in sleepy
    keda = added["text"][deployfiles.KEDA_FILE].split("\n---\n")
    (big_scaled,) = [part for part in keda if "name: worker-big-model" in part]
    assert "# 2 warm workers at all times, up to 4." in big_scaled
    assert "9 waiting -> 3 workers" in big_scaled


def test_an_optional_gpu_is_written_commented_out_and_valid_uncommented(added):
    (text,) = [part for part in added["text"][deployfiles.WORKERS_FILE].split("\n---\n")
               if "name: worker-maybe-gpu" in part]  # fmt: skip
    plain = yaml.safe_load(text)
    assert "nvidia.com/gpu" not in container(plain)["resources"]["limits"]
    assert "nodeSelector" not in plain["spec"]["template"]["spec"]
    uncommented = yaml.safe_load(GPU_LINES.sub(r"\1\2", text))
    assert container(uncommented)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert uncommented["spec"]["template"]["spec"]["tolerations"][0]["operator"] == "Exists"
    kubernetes_validate.validate(uncommented, KUBERNETES_VERSIONS[-1], strict=True)


def test_an_added_model_gets_a_compose_worker_service(added):
    default, distributed, gpu = (added["compose"][profile]["services"] for profile in [(), ("distributed",), ("gpu",)])
    assert set(default) == {"redis", "web", "worker"}, "`docker compose up` is unchanged by a new model"
    every_queue = distributed["worker"]
    for task_type in added["types"]:
        service = distributed[f"worker-{task_type.name}"]
        assert service["command"] == ["python", "manage.py", "rqworker", task_type.name]
        assert service["profiles"] == ["distributed"]
        # Extends the every-queue worker: its settings, health check and pids limit.
        assert service["environment"] == every_queue["environment"]
        assert service["healthcheck"] == every_queue["healthcheck"]
        assert service["deploy"]["resources"]["limits"]["pids"] == every_queue["deploy"]["resources"]["limits"]["pids"]
        # ...and the volume of jobs' files, at the same path as in the web service.
        assert every_queue["volumes"][0] in service["volumes"] and every_queue["volumes"][0]["source"] == "job-files"
    big = distributed["worker-big_model"]
    assert big["image"] == "factorize-worker-big-model" and big["build"]["args"] == {"MODELS": "big_model"}
    assert big["deploy"]["resources"]["limits"]["memory"] == str(16 * 2**30)
    assert big["deploy"]["resources"]["limits"]["cpus"] == 4
    assert big["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}
    ], "a GPU it cannot run without: reserved under the distributed profile itself"
    assert big["volumes"] == [
        *every_queue["volumes"],
        {"type": "volume", "source": "big-model-weights", "target": "/app/models/big_model", "read_only": True},
    ]
    assert added["compose"][("distributed",)]["volumes"]["big-model-weights"]["external"] is True
    assert "big-model-weights" not in added["compose"][()]["volumes"], "`docker compose up` needs no weights volume"
    assert big["stop_grace_period"] == "15m30s", "its job_timeout plus the margin"
    sleepy = distributed["worker-sleepy"]
    assert sleepy["image"] == "factorize-app" and "build" not in sleepy and sleepy["pull_policy"] == "never"
    assert sleepy["stop_grace_period"] == "33s"
    # The opt-in GPU: a service of its own under the gpu profile only.
    assert set(gpu) - set(default) == {"worker-digits-gpu", "worker-maybe-gpu-gpu"}
    assert gpu["worker-maybe-gpu-gpu"]["profiles"] == ["gpu"]
    assert gpu["worker-maybe-gpu-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert "reservations" not in distributed["worker-maybe-gpu"]["deploy"]["resources"]


def test_the_shell_overrides_one_models_limits_only(project: Path):
    (project / ".env").write_text("WORKER_DIGITS_MEMORY=3g\nWORKER_DIGITS_CPUS=2\n")
    services = compose_config(project, "distributed")["services"]
    assert services["worker-digits"]["deploy"]["resources"]["limits"]["memory"] == str(3 * 2**30)
    assert services["worker-digits"]["deploy"]["resources"]["limits"]["cpus"] == 2
    assert services["worker-primes"]["deploy"]["resources"]["limits"]["memory"] == str(512 * 2**20)


# --- the declaration and the names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"cpu": "1.5"},
        {"cpu": "0"},
        {"memory": "512M"},
        {"memory": "1G"},
        {"memory_request": "1Gi"},  # over the 512Mi limit
        {"cpu_request": "2"},  # over the 1-core limit
        {"gpu": -1},
        {"gpu_required": True},  # with no GPU
        {"min_workers": 6},  # over max_workers (5)
        {"max_workers": 0, "min_workers": 0},
        {"jobs_per_worker": 0},
        {"weights": "Big_Weights"},
        {"weights": "../weights"},
    ],
    ids=str,
)
def test_the_declaration_refuses_what_would_deploy_wrong(fields):
    with pytest.raises(ValueError, match="Deployment"):
        Deployment(**fields)


def test_the_defaults_and_the_shipped_declarations_are_valid():
    Deployment()
    for path in DEFAULT_TASK_TYPES:
        assert isinstance(import_string(path).deployment, Deployment)


def test_names_that_would_clash_or_that_kubernetes_refuses_are_refused(registered):
    clashing = [TaskType(name=name, path=name, description="", input_serializer=BigInput, result_serializer=BigResult,
                         implementation="tests.task_types:Echo") for name in ("two_words", "two-words")]  # fmt: skip
    with pytest.raises(deployfiles.DeployFilesError, match="share the name worker-two-words"):
        deployfiles.workers(clashing, 300)
    too_long = dataclasses.replace(clashing[0], name="x" * 60)
    with pytest.raises(deployfiles.DeployFilesError, match="not a Kubernetes name"):
        deployfiles.workers([too_long], 300)
