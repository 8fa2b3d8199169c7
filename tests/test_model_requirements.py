"""A model's requirements live with it: a worker without them refuses that type in one line, or
leaves it out, and the rest of the service carries on."""

import subprocess

from tests.conftest import PYTHON, ROOT, service_env


def without_sklearn(tmp_path) -> dict[str, str]:
    """An environment in which `import sklearn` fails as it does where it is not installed."""
    stub = tmp_path / "stubs" / "sklearn"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n")
    return service_env(PYTHONPATH=str(stub.parent))


def test_a_worker_named_for_a_type_without_its_requirements_exits_with_one_line(tmp_path):
    result = subprocess.run(
        [PYTHON, "manage.py", "rqworker", "digits", "--burst"],
        cwd=ROOT,
        env=without_sklearn(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("CommandError: task type 'digits' needs the package 'sklearn'"), result.stderr
    assert "factorize_app/tasks/digits/requirements.txt" in lines[-1]
    assert "Traceback" not in result.stderr


def test_a_worker_for_every_queue_leaves_out_the_types_it_cannot_run(tmp_path, redis_conn):
    result = subprocess.run(
        [PYTHON, "manage.py", "rqworker", "--burst"],
        cwd=ROOT,
        env=without_sklearn(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    left_out = [line for line in output.splitlines() if "leaving out a task type" in line]
    # digits, and any other model that needs scikit-learn; never one for another reason.
    assert any('"task_type": "digits"' in line for line in left_out), output
    assert all("needs the package 'sklearn'" in line for line in left_out), output
    assert "Traceback" not in output
