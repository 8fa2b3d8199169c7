"""The lean poll lane answers exactly what the DRF views answer, and leaves everything else to them."""

import requests

from tests.conftest import wait_until

DJANGO = {"Cookie": "lane=off"}  # any cookie sends a request through Django and DRF


def both(method: str, url: str, **kwargs) -> tuple[requests.Response, requests.Response]:
    lean = requests.request(method, url, timeout=10, **kwargs)
    full = requests.request(method, url, timeout=10, headers=DJANGO, **kwargs)
    return lean, full


def assert_same(lean: requests.Response, full: requests.Response) -> None:
    assert (lean.status_code, lean.json()) == (full.status_code, full.json())
    assert lean.headers.get("Location") == full.headers.get("Location")
    assert lean.headers.get("Retry-After") == full.headers.get("Retry-After")
    assert "Allow" not in lean.headers and "Allow" in full.headers  # the lane answered, then DRF
    # Every header Django's middleware and DRF add, the lane adds too (the server's own aside).
    server_headers = {"allow", "content-length", "date", "server", "connection", "keep-alive"}
    assert {k.lower(): v for k, v in lean.headers.items() if k.lower() not in server_headers} == {
        k.lower(): v for k, v in full.headers.items() if k.lower() not in server_headers
    }


def test_pending_and_done_answers_match_drf(live_url, start_worker):
    lean, full = both("POST", f"{live_url}/factorize", json={"number": 408216})
    assert lean.status_code == 202
    assert_same(lean, full)
    assert_same(*both("GET", f"{live_url}/jobs/{lean.json()['job_id']}"))
    start_worker("factorization", "failing")
    wait_until(lambda: requests.post(f"{live_url}/factorize", json={"number": 408216}, timeout=10).status_code == 200)
    assert_same(*both("POST", f"{live_url}/factorize/", json={"number": 408216}))
    assert_same(*both("GET", f"{live_url}/jobs/{lean.json()['job_id']}/"))
    wait_until(lambda: requests.post(f"{live_url}/failing", json={"tag": "t"}, timeout=10).status_code == 200)
    assert_same(*both("POST", f"{live_url}/failing", json={"tag": "t"}))


def test_integers_beyond_64_bits_in_and_out(live_url, warm_worker):
    warm_worker("factorization")
    prime = 2**127 - 1
    wait_until(lambda: requests.post(f"{live_url}/factorize", json={"number": prime}, timeout=10).status_code == 200)
    lean, full = both("POST", f"{live_url}/factorize", json={"number": str(prime)})
    assert_same(lean, full)
    assert lean.json()["factorization"] == [[prime, 1]]


def test_errors_and_browsers_fall_through_to_django(live_url):
    bad = requests.post(f"{live_url}/factorize", json={"number": "abc"}, timeout=10)
    assert bad.status_code == 400 and "number" in bad.json()
    assert (
        requests.post(
            f"{live_url}/factorize", data="{", timeout=10, headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert requests.get(f"{live_url}/jobs/factorization-{'0' * 32}", timeout=10).status_code == 404
    html = requests.post(f"{live_url}/factorize", json={"number": 5}, headers={"Accept": "text/html"}, timeout=10)
    assert html.status_code == 202 and html.headers["Content-Type"].startswith("text/html")
