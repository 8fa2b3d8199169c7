"""Files in jobs' inputs given as URLs the service fetches: only public addresses unless allowed,
the allow-list, redirects checked again, errors and slow servers refused naming the field, one
timeout for a request's fetches, and fetches counted as the client's held requests."""

# ruff: noqa: F811 (the fixtures imported below are the tests' parameters)
from __future__ import annotations

import time

import pytest

from tests.test_file_inputs import data_uri, digit_png, file_server, post_digits, serve, storage_dir  # noqa: F401


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "[::1]", "10.1.2.3"])
def test_urls_to_addresses_that_are_not_public_are_refused_by_default(api, storage_dir, host):
    answer = post_digits(api, image=f"http://{host}/digit.png")
    assert answer.status_code == 400
    assert "not a public address" in answer.json()["image"][0]


def test_a_url_outside_the_allow_list_is_refused(api, storage_dir, settings):
    settings.FILE_URL_ALLOWED_HOSTS = ["images.example.com"]
    answer = post_digits(api, image="http://other.example.com/digit.png")
    assert answer.status_code == 400 and "FILE_URL_ALLOWED_HOSTS" in answer.json()["image"][0]


def test_a_redirect_to_a_private_address_is_refused(api, storage_dir, settings, file_server):
    settings.FILE_URL_ALLOWED_HOSTS = ["*", file_server]  # the loopback server itself is allowed...
    serve("/moved", b"", status=302, Location="http://169.254.169.254/latest/meta-data/")
    answer = post_digits(api, image=f"http://{file_server}/moved")
    assert answer.status_code == 400
    assert "169.254.169.254" in answer.json()["image"][0]  # ...but not where it redirects


def test_a_redirect_within_the_allow_list_is_followed(api, storage_dir, settings, file_server):
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    serve("/moved", b"", status=302, Location="/digit.png")
    serve("/digit.png", digit_png())
    answer = post_digits(api, image=f"http://{file_server}/moved")
    assert answer.status_code == 202, answer.content
    assert answer.json()["image"]["name"] == "digit.png"


def test_a_url_that_answers_an_error_is_refused(api, storage_dir, settings, file_server):
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    answer = post_digits(api, image=f"http://{file_server}/missing.png")
    assert answer.status_code == 400 and "answered 404" in answer.json()["image"][0]


def test_a_slow_url_times_out_naming_the_field(api, storage_dir, settings, file_server):
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    settings.FILE_URL_TIMEOUT = 0.5
    started = time.monotonic()
    answer = post_digits(api, image=f"http://{file_server}/slow")
    assert answer.status_code == 400 and "FILE_URL_TIMEOUT" in answer.json()["image"][0]
    assert time.monotonic() - started < 5  # cut off at the timeout, not after the whole drip


def test_a_batchs_url_fetches_share_one_timeout(api, storage_dir, settings, file_server):
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    settings.FILE_URL_TIMEOUT = 0.5
    items = [{"image": f"http://{file_server}/slow"} for _ in range(4)]
    started = time.monotonic()
    results = api.post("/digits/batch", {"items": items}, format="json").json()["results"]
    assert [item["status"] for item in results] == ["invalid"] * 4
    assert all("FILE_URL_TIMEOUT" in item["errors"]["image"][0] for item in results)
    assert time.monotonic() - started < 1.8  # 0.5 s for them all, not 0.5 s each (2 s)


def test_url_fetches_count_as_held_requests_of_their_client(api, storage_dir, settings, file_server):
    """A fetch holds a web thread as a long poll does: beyond the client's cap, 429 (an upload or a
    data: URI holds none)."""
    settings.FILE_URL_ALLOWED_HOSTS = [file_server]
    settings.MAX_HELD_PER_CLIENT = 0
    serve("/digit.png", digit_png())
    refused = post_digits(api, image=f"http://{file_server}/digit.png")
    assert refused.status_code == 429 and "MAX_HELD_PER_CLIENT" in refused.json()["detail"]
    assert post_digits(api, image=data_uri(digit_png())).status_code == 202
