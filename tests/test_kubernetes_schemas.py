"""deploy/kubernetes, checked offline since no cluster is at hand: every manifest validates against
the Kubernetes API schemas (the kubernetes-validate package, strict: unknown fields fail) and every
KEDA ScaledObject against tests/schemas/; kustomize renders them with the image set; and the web
server, started with the ConfigMap's settings, answers its probes as the kubelet asks. The
manifests against the code: test_kubernetes.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml

from tests.conftest import ROOT, dead_redis_url, web_server
from tests.kubernetes_manifests import (
    DEPLOY,
    KEDA_SCHEMA,
    KUBERNETES_VERSIONS,
    KUSTOMIZATION,
    MANIFESTS,
    config,
    container,
    find,
    image_for,
    names_read_by_the_service,
    one,
    shipped_task_types,
    worker_name,
)

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
