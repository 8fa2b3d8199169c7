"""The contract every model (each task type under factorize_app/tasks/) keeps with the service.

Parametrized over every discovered model, so `make test` checks them all and a new folder is
checked without a line added here; `make test-model MODEL=NAME` (TEST_MODEL=NAME) checks one:
- its declaration: a queue-safe name, examples that its input serializer accepts;
- its implementation: set up once, then each example answered with a result its result
  serializer accepts (and JSON can carry), and handle_batch() agreeing with handle();
- the API: its path answers, a bad input is a 400 JSON naming the field, the HTML form sends
  what JSON sends, and /api/schema/ documents it with its example;
- a real worker answers an example through the queue;
- its requirements are pinned and install beside the service's (pip's resolver against the
  package index, without installing; skipped, saying so, when the index is unreachable).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
from typing import Any

import pytest
from django.conf import settings
from django.utils.module_loading import import_string
from packaging.requirements import InvalidRequirement, Requirement
from rest_framework import serializers

from factorize_app.tasks import ImplementationUnavailable, TaskType, ensure_setup, get_task_type
from tests.conftest import PYTHON, ROOT, wait_done

QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SELECTED = os.environ.get("TEST_MODEL", "").strip()


def models() -> list[TaskType]:
    """The registered task types found under factorize_app/tasks/ (the test-only ones of
    tests/task_types.py are fixtures, not models); only TEST_MODEL's when it is set."""
    found = [get_task_type(import_string(path).name) for path in settings.DEFAULT_TASK_TYPES]
    if SELECTED:
        found = [task_type for task_type in found if SELECTED in (task_type.name, task_type.path)]
    return found


MODELS = models()
by_model = pytest.mark.parametrize("task_type", MODELS, ids=lambda task_type: task_type.name)


def test_the_selected_model_exists():
    """TEST_MODEL (make test-model MODEL=...) must name a model: a typo never passes by checking nothing."""
    names = sorted(import_string(path).name for path in settings.DEFAULT_TASK_TYPES)
    assert MODELS, f"TEST_MODEL={SELECTED!r} names no model under factorize_app/tasks/; there are: {names}"


@pytest.fixture
def model(task_type: TaskType):
    """The implementation, imported and set up (once per process, as a worker does)."""
    try:
        task_type.model  # noqa: B018 (imports the implementation)
    except ImplementationUnavailable as exc:
        pytest.skip(f"{exc} (make install-test installs every model's requirements)")
    ensure_setup(task_type)
    return task_type


def agree(left: Any, right: Any) -> bool:
    """Equal results, floats within rounding (a batched model call may round differently)."""
    if isinstance(left, float) or isinstance(right, float):
        return isinstance(left, (int, float)) and isinstance(right, (int, float)) and math.isclose(
            left, right, rel_tol=1e-6, abs_tol=1e-9
        )
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(agree(left[key], right[key]) for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(agree(a, b) for a, b in zip(left, right, strict=True))
    return left == right


@by_model
def test_the_declaration_is_complete_and_its_examples_are_valid(task_type):
    assert QUEUE_NAME.match(task_type.name), f"{task_type.name!r}: letters, digits, _ and - only (a queue name)"
    assert task_type.description.strip(), "a description, for the API docs and the front page"
    assert task_type.examples, "at least one example input (examples=(...,)): the docs, the form and this test use it"
    for example in task_type.examples:
        json.dumps(example)  # sent as JSON by the docs and the form
        task_type.validate(example)  # raises, naming the field, when the serializer refuses it


@by_model
def test_each_example_is_answered_with_a_valid_result(model):
    for example in model.examples:
        result = model.handler(model.validate(example))
        checked = model.result_serializer(data=result)
        assert checked.is_valid(), f"{example}: {result!r} is not a valid result: {checked.errors}"
        assert set(result) == set(model.result_fields), "exactly the result serializer's fields"
        assert json.loads(json.dumps(result)) == result, "a result JSON carries unchanged"


@by_model
def test_handle_batch_agrees_with_handle(model):
    if model.batch_handler is None:
        pytest.skip(f"{model.name} has no handle_batch()")
    inputs = [model.validate(example) for example in model.examples] * 2
    batched = model.batch_handler(inputs)
    assert len(batched) == len(inputs), "one result per input"
    for data, result in zip(inputs, batched, strict=True):
        assert agree(result, model.handler(data)), f"{data}: handle_batch gave {result}, handle {model.handler(data)}"


def breaking_inputs(task_type: TaskType) -> list[tuple[str, dict]]:
    """(field, input) pairs that the input serializer must refuse, naming the field: the first
    example without each required field, or with a value of the wrong shape."""
    example = dict(task_type.examples[0])
    cases = []
    for name, field in task_type.input_serializer().fields.items():
        if field.read_only:
            continue
        if field.required:
            cases.append((name, {key: value for key, value in example.items() if key != name}))
        for wrong in ({"not": ["a", "valid", "value"]}, [[{"nested": None}]], None):
            try:
                task_type.validate({**example, name: wrong})
            except serializers.ValidationError as exc:
                if name in exc.detail:
                    cases.append((name, {**example, name: wrong}))
                    break
    return cases


@by_model
def test_a_bad_input_is_a_400_naming_the_field(task_type, api):
    cases = breaking_inputs(task_type)
    assert cases, "no input field can be given a bad value: the API would accept anything"
    for name, body in cases:
        response = api.post(f"/{task_type.path}", body, format="json")
        assert response.status_code == 400, (name, body, response.content)
        assert response["Content-Type"].startswith("application/json")
        assert name in response.json(), f"the error names {name!r}: {response.json()}"


@by_model
def test_the_html_form_is_prefilled_and_sends_what_json_sends(task_type, api):
    page = api.get(f"/{task_type.path}", HTTP_ACCEPT="text/html").content.decode()
    assert "are not currently supported in HTML input" not in page
    example = task_type.examples[0]
    as_json = api.post(f"/{task_type.path}", example, format="json")
    form = {name: json.dumps(value) if isinstance(value, (list, dict)) else value for name, value in example.items()}
    as_form = api.post(f"/{task_type.path}", form, HTTP_ACCEPT="application/json")  # multipart, as the form posts
    assert as_json.status_code in (200, 202) and as_form.status_code in (200, 202), as_form.content
    assert as_form.json()["job_id"] == as_json.json()["job_id"], "the same input, so the same job"


@by_model
def test_the_schema_documents_the_path_and_its_example(task_type, api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    submit = schema["paths"][f"/{task_type.path}"]["post"]
    assert submit["operationId"] == f"{task_type.name}_submit"
    body = submit["requestBody"]["content"]["application/json"]
    assert [example["value"] for example in body["examples"].values()] == [dict(e) for e in task_type.examples]
    component = schema["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(task_type.input_fields) <= set(component["properties"])
    assert f"/{task_type.path}/batch" in schema["paths"]


@by_model
def test_a_worker_answers_an_example_through_the_queue(model, api, warm_worker):
    warm_worker(model.name)
    example = model.examples[0]
    done = wait_done(api, f"/{model.path}", timeout=60, **example)
    assert done["status"] == "finished", done
    assert agree({name: done[name] for name in model.result_fields}, model.handler(model.validate(example)))


def index_url() -> str:
    result = subprocess.run(
        [PYTHON, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True, check=False
    )
    return os.environ.get("PIP_INDEX_URL") or result.stdout.strip() or "https://pypi.org/simple/"


def reachable(url: str) -> str | None:
    """None when the index answers; else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return None
    except OSError as exc:
        return str(exc)


@by_model
def test_its_requirements_are_pinned_and_install_beside_the_services(task_type):
    if task_type.requirements is None:
        pytest.skip(f"{task_type.name} declares no requirements of its own (the service's suffice)")
    path = ROOT / task_type.requirements
    assert path.is_file(), f"{task_type.requirements} (its `requirements`) does not exist"
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            pytest.fail(f"{task_type.requirements}: {line!r} is not a requirement: {exc}")
        pins = [spec for spec in requirement.specifier if spec.operator == "=="]
        assert pins, f"{task_type.requirements}: pin {requirement.name} with == (one version, as the service's are)"
    url = index_url()
    if why := reachable(url):
        pytest.skip(f"the package index {url} is unreachable ({why}): cannot check that the requirements install")
    # The resolver checks the model's pins against the service's (and each other), fetching from
    # the index what is not installed here; --dry-run installs nothing.
    result = subprocess.run(
        [PYTHON, "-m", "pip", "install", "--dry-run", "--quiet", "-r", "requirements.txt", "-r", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"pip refuses {task_type.requirements}:\n{result.stderr}"
