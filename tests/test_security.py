"""Security: staff-only admin and dashboard, deploy settings, the SECRET_KEY guard, job-id scoping,
and the request body limit (413 JSON), in process and through the production server."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIRequestFactory

from factorize_app.api.urls import router
from project.settings import INSECURE_DEV_SECRET_KEY
from tests.conftest import PYTHON, ROOT, service_env, web_server

# --- Admin and dashboard: staff only --------------------------------------------------------

STAFF_PAGES = [
    "/admin/",
    "/admin/auth/user/",
    "/django-rq/",
    "/django-rq/queues/0/",
    "/django-rq/queues/0/finished/",
    "/django-rq/workers/0/",
]
TOKEN_PAGES = ["/django-rq/stats.json", "/django-rq/stats.json/guessedtoken", "/django-rq/metrics"]


def assert_sent_to_login(response, path: str) -> None:
    assert response.status_code == 302, (path, response.status_code)
    location = urlsplit(response["Location"])
    assert location.path == "/admin/login/", (path, location)


@pytest.mark.django_db
@pytest.mark.parametrize("path", STAFF_PAGES)
def test_anonymous_and_non_staff_users_are_sent_to_the_login(client, path):
    assert_sent_to_login(client.get(path), path)
    user = get_user_model().objects.create_user("visitor", password="not-staff-1234")
    client.force_login(user)
    assert_sent_to_login(client.get(path), path)


@pytest.mark.django_db
@pytest.mark.parametrize("path", TOKEN_PAGES)
def test_dashboard_data_needs_staff_or_the_api_token(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert not {"queues", "workers"} & set(response.json())


@pytest.mark.django_db
def test_staff_get_the_pages(admin_client):
    """The control: the same pages do answer a staff login (so the refusals above are real)."""
    for path in ["/admin/", "/django-rq/", "/django-rq/queues/0/"]:
        assert admin_client.get(path).status_code == 200, path
    assert "queues" in admin_client.get("/django-rq/stats.json").json()


def test_production_server_refuses_anonymous_visitors(live_url):
    for path in STAFF_PAGES:
        response = requests.get(f"{live_url}{path}", allow_redirects=False, timeout=10)
        assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/admin/login/", path
    for path in TOKEN_PAGES:
        response = requests.get(f"{live_url}{path}", allow_redirects=False, timeout=10)
        assert response.status_code == 401 and "queues" not in response.json(), path


# --- Deploy settings and the SECRET_KEY guard -------------------------------------------------

GOOD_KEY = secrets.token_urlsafe(50)
TLS_KNOBS = {
    "SECURE_SSL_REDIRECT": ("1", "security.W008"),
    "SESSION_COOKIE_SECURE": ("1", "security.W012"),
    "CSRF_COOKIE_SECURE": ("1", "security.W016"),
    "SECURE_HSTS_SECONDS": ("31536000", "security.W004"),
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": ("1", "security.W005"),
    "SECURE_HSTS_PRELOAD": ("1", "security.W021"),
}


def docker_env(tmp_path, **overrides: str | None) -> dict[str, str]:
    """The environment of the Docker image (project.settings, collected static files, SQLite in a
    volume) for a deployment behind a TLS proxy; an override of None removes the variable."""
    env = service_env(
        DJANGO_SETTINGS_MODULE="project.settings",
        STATIC_COLLECTED="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PRODUCTION="1",
        SECRET_KEY=GOOD_KEY,
        DEBUG="0",
        ALLOWED_HOSTS="queue.example.com",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        CSRF_TRUSTED_ORIGINS="https://queue.example.com",
        **{name: value for name, (value, _) in TLS_KNOBS.items()},
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_deploy_check_passes_for_a_tls_deployment(tmp_path):
    result = manage(docker_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (0 silenced)" in result.stdout


def test_deploy_check_fails_on_the_default_key(tmp_path):
    """The development default (what `docker compose up` with no .env runs with) is flagged."""
    result = manage(
        docker_env(tmp_path, PRODUCTION=None, SECRET_KEY=None), "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr and "security.W009" in result.stderr


@pytest.mark.parametrize("knob", list(TLS_KNOBS))
def test_each_tls_knob_is_wired(tmp_path, knob):
    """Dropping any one knob makes the deploy check fail with that knob's warning."""
    result = manage(docker_env(tmp_path, **{knob: None}), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert TLS_KNOBS[knob][1] in result.stderr, result.stderr


def test_development_defaults_keep_plain_http_working():
    assert django_settings.SECURE_SSL_REDIRECT is False
    assert django_settings.SESSION_COOKIE_SECURE is False and django_settings.CSRF_COOKIE_SECURE is False
    assert django_settings.SECURE_HSTS_SECONDS == 0
    assert django_settings.SECURE_PROXY_SSL_HEADER is None


@pytest.mark.parametrize(
    "key",
    [None, "", INSECURE_DEV_SECRET_KEY, "short-key", "django-insecure-" + secrets.token_urlsafe(50), "ab" * 40],
    ids=["missing", "empty", "default", "short", "django-insecure", "repetitive"],
)
def test_production_refuses_to_start_with_a_bad_secret_key(tmp_path, key):
    result = manage(docker_env(tmp_path, SECRET_KEY=key), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured: PRODUCTION is on: SECRET_KEY" in result.stderr, result.stderr


def test_production_refuses_debug(tmp_path):
    result = manage(docker_env(tmp_path, DEBUG="1"), "check")
    assert result.returncode != 0 and "DEBUG must be off" in result.stderr


@pytest.mark.parametrize(
    "command", [["scripts/start-web.sh"], [PYTHON, "manage.py", "rqworker"]], ids=["web server", "worker"]
)
def test_services_exit_at_start_without_a_secret_key(tmp_path, command):
    """The Docker image's web command and the worker stop at once, saying why (no half-started service)."""
    env = docker_env(tmp_path, SECRET_KEY=None, HOST="127.0.0.1", PORT="0")
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "PRODUCTION is on: SECRET_KEY" in result.stdout + result.stderr
    print(f"{command[-1]} refused to start in {time.monotonic() - started:.1f} s")


def test_production_starts_with_a_good_key(tmp_path):
    """The control for the refusals above."""
    result = manage(docker_env(tmp_path), "check")
    assert result.returncode == 0, result.stderr


def test_tls_redirect_covers_every_path_on_the_production_server():
    """With SECURE_SSL_REDIRECT on, no API path is served over plain http (the lean lane's
    included); requests the TLS proxy marks as https are served; probes stay on http."""
    tls = {"SECURE_SSL_REDIRECT": "1", "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto", "SECURE_HSTS_SECONDS": "3600"}
    with web_server(**tls) as url, requests.Session() as session:
        https = {"X-Forwarded-Proto": "https"}
        submitted = session.post(f"{url}/factorize", json={"number": 12}, headers=https, allow_redirects=False)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert session.get(f"{url}/queues", headers=https, allow_redirects=False).headers["Strict-Transport-Security"]
        for method, path, body in [
            ("GET", "/queues", None),
            ("GET", "/factorize", None),
            ("POST", "/factorize", {"number": 12}),
            ("GET", f"/jobs/{job_id}", None),
        ]:
            response = session.request(method, f"{url}{path}", json=body, allow_redirects=False, timeout=10)
            assert response.status_code == 301, (method, path, response.status_code)
            assert response.headers["Location"].startswith("https://"), (method, path)
        for probe in ["/healthz", "/readyz"]:
            assert session.get(f"{url}{probe}", allow_redirects=False, timeout=10).status_code == 200, probe


# --- Job ids: scoped to their type, not enumerable ------------------------------------------


def queued_factorization(api) -> str:
    response = api.post("/factorize", {"number": 408216}, format="json")
    assert response.status_code == 202
    return response.json()["job_id"]


def test_a_job_id_reads_only_its_own_type(api, redis_conn):
    job_id = queued_factorization(api)
    assert api.get(f"/jobs/{job_id}").status_code == 202  # the control
    digest = job_id.removeprefix("factorization-")
    for other in ["primes", "failing", "sleepy"]:
        response = api.get(f"/jobs/{other}-{digest}")
        assert response.status_code == 404 and response.json() == {"detail": "No job with this id."}
    # Even a job hash stored under another type's id (say, planted by another RQ client) is not
    # answered: the input it holds must hash to the id under that type.
    redis_conn.copy(f"rq:job:{job_id}", f"rq:job:primes-{digest}")
    assert api.get(f"/jobs/primes-{digest}").status_code == 404
    assert api.delete(f"/jobs/primes-{digest}").status_code == 404
    assert redis_conn.exists(f"rq:job:{job_id}")  # and nothing was cancelled through it


MALFORMED_IDS = [
    "factorization-" + "0" * 31,
    "factorization-" + "g" * 32,
    "FACTORIZATION-" + "0" * 32,
    "factorization_" + "0" * 32,
    "unknown-" + "0" * 32,
    "-" + "0" * 32,
    "factorization",
    "..%2F..%2Fetc",
    "rq:job:x",
    "factorization-" + "0" * 32 + "%00",
    "x" * 2000,
]


@pytest.mark.parametrize("job_id", MALFORMED_IDS, ids=range(len(MALFORMED_IDS)))
def test_malformed_ids_are_404_json(api, job_id):
    for response in (api.get(f"/jobs/{job_id}"), api.delete(f"/jobs/{job_id}")):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json" and "detail" in response.json()


def test_malformed_ids_are_404_json_on_the_production_server(live_url):
    with requests.Session() as session:
        for job_id in MALFORMED_IDS:
            response = session.get(f"{live_url}/jobs/{job_id}", timeout=10)
            assert response.status_code == 404 and "detail" in response.json(), job_id


def test_no_endpoint_lists_jobs(api, live_url):
    job_id = queued_factorization(api)
    for path in ["/jobs", "/jobs/", "/queues", "/", "/factorize", "/metrics", "/api/schema/"]:
        response = api.get(path, HTTP_ACCEPT="application/json")
        assert job_id not in response.content.decode(), path
        live = requests.get(f"{live_url}{path}", timeout=10)
        assert job_id not in live.text, path
    for path in ["/jobs", "/jobs/"]:
        response = api.get(path)
        assert response.status_code in (404, 405) and not isinstance(response.json(), list)
    assert "job-list" not in {url.name for url in router.urls}


# --- Request body limit: 413 JSON -----------------------------------------------------------


def padded(size: int, **fields) -> bytes:
    """A valid input whose JSON body is exactly `size` bytes (unknown fields are ignored)."""
    body = json.dumps({**fields, "pad": ""}).encode()
    return json.dumps({**fields, "pad": "x" * (size - len(body))}).encode()


def assert_too_large(response) -> None:
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]


def test_default_limit_fits_a_batch_of_a_thousand_longest_inputs(api):
    batch = [{"number": "9" * django_settings.MAX_NUMBER_DIGITS} for _ in range(1000)]
    body = json.dumps({"number": 12, "items": batch})
    assert len(body) < django_settings.MAX_REQUEST_BYTES == django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert api.post("/factorize", body, content_type="application/json").status_code == 202


def test_a_body_over_the_limit_is_413_json(api):
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert api.post("/factorize", padded(limit, number=12), content_type="application/json").status_code == 202
    assert_too_large(api.post("/factorize", padded(limit + 1, number=12), content_type="application/json"))
    assert_too_large(api.post("/primes", padded(limit + 1, n=12), content_type="application/json"))
    form = {"number": "12", "pad": "x" * limit}
    assert_too_large(api.post("/factorize", form))  # multipart
    assert_too_large(
        api.post("/factorize", "number=12&pad=" + "x" * limit, content_type="application/x-www-form-urlencoded")
    )
    upload = SimpleUploadedFile("big.bin", b"x" * (limit + 1))  # files are not in Django's own count
    assert_too_large(api.post("/factorize", {"number": "12", "file": upload}))


def test_too_many_form_fields_is_400_json(api, settings):
    """Found by the fuzzer: Django's TooManyFieldsSent was answered with its 400 HTML page."""
    fields = "&".join(f"f{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    for path in ["/factorize", "/factorize/batch"]:
        response = api.post(path, fields, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400 and response["Content-Type"] == "application/json", path
        assert "Too many form fields" in response.json()["detail"]


@pytest.mark.django_db
def test_non_api_views_answer_413_json_too(client):
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client.post(
        "/admin/login/", "username=a&password=" + "x" * limit, content_type="application/x-www-form-urlencoded"
    )
    assert_too_large(response)


def test_drf_answers_413_json_without_the_middleware(settings):
    """The exception handler's own 413, for a DRF view reached without RequestBodyLimitMiddleware."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    viewset = next(viewset for _, viewset, basename in router.registry if basename == "factorization")
    view = viewset.as_view({"post": "create"})
    factory = APIRequestFactory()
    request = factory.post("/factorize", padded(1001, number=12), content_type="application/json")
    response = view(request).render()
    assert response.status_code == 413 and "too large" in json.loads(response.content)["detail"]
    ok = view(factory.post("/factorize", padded(1000, number=12), content_type="application/json")).render()
    assert ok.status_code == 202


def test_a_lowered_limit_applies_in_process(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    assert api.post("/factorize", padded(4096, number=12), content_type="application/json").status_code == 202
    assert_too_large(api.post("/factorize", padded(4097, number=12), content_type="application/json"))


def assert_too_large_http(response: requests.Response) -> None:
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert response.headers["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]


def test_production_server_answers_413_json(live_url):
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    headers = {"Content-Type": "application/json"}
    with requests.Session() as session:
        assert_too_large_http(session.post(f"{live_url}/factorize", data=padded(limit + 1, number=12), headers=headers))
        assert_too_large_http(session.post(f"{live_url}/factorize", data=padded(4 * limit, number=12), headers=headers))
        assert_too_large_http(session.post(f"{live_url}/admin/login/", data={"username": "a", "pad": "x" * limit}))
        # the connection is still good for the next request
        assert session.post(f"{live_url}/factorize", json={"number": 12}, timeout=10).status_code == 202


def test_production_server_honours_a_lowered_limit():
    """MAX_REQUEST_BYTES reaches every path of the server, the lean JSON lane included."""
    with web_server(MAX_REQUEST_BYTES="4096") as url:
        json_post = {"headers": {"Content-Type": "application/json"}, "timeout": 10}
        assert requests.post(f"{url}/factorize", data=padded(4096, number=12), **json_post).status_code == 202
        assert_too_large_http(requests.post(f"{url}/factorize", data=padded(4097, number=12), **json_post))
        assert_too_large_http(requests.post(f"{url}/factorize", data={"number": "12", "pad": "x" * 5000}, timeout=10))
