"""Per-client rates: 429 JSON with Retry-After, counted per address; proxies trusted only when configured."""

import ipaddress

import requests

from tests.conftest import submit, web_server


def test_drf_views_answer_429_with_retry_after_once_a_client_spends_its_rate(api, settings):
    settings.THROTTLE_SUBMIT = "3/minute"
    settings.THROTTLE_POLL = "2/minute"
    job_id = submit(api, number=1234).json()["job_id"]
    submit(api, number=1234)
    submit(api, number=1235)
    throttled = api.post("/factorize", {"number": 1234}, format="json")
    assert throttled.status_code == 429
    assert "throttled" in throttled.json()["detail"]
    assert 0 < int(throttled["Retry-After"]) <= 60
    # Polls have their own allowance.
    assert api.get(f"/jobs/{job_id}").status_code == 202
    assert api.get("/queues").status_code == 200
    assert api.get(f"/jobs/{job_id}").status_code == 429
    # Another address is another client.
    assert api.post("/factorize", {"number": 1234}, format="json", REMOTE_ADDR="10.1.2.3").status_code == 202


def test_the_lean_lane_counts_in_its_one_round_trip_and_trusts_only_the_configured_header():
    with web_server(THROTTLE_SUBMIT="4/minute", CLIENT_IP_HEADER="X-Real-IP", TRUSTED_PROXIES="127.0.0.0/8") as base:
        def post(address: str, spoof: str = "") -> requests.Response:
            headers = {"X-Real-IP": address, "X-Forwarded-For": spoof} if spoof else {"X-Real-IP": address}
            return requests.post(f"{base}/factorize", json={"number": 4321}, headers=headers, timeout=10)

        assert [post("10.0.0.1").status_code for _ in range(4)] == [202] * 4
        throttled = post("10.0.0.1", spoof="10.9.9.9")
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
        assert throttled.json()["detail"]
        assert post("10.0.0.2").status_code == 202

    with web_server(THROTTLE_SUBMIT="2/minute") as base:  # no proxy header configured
        answers = [
            requests.post(
                f"{base}/factorize", json={"number": 4321}, headers={"X-Forwarded-For": f"10.0.0.{i}"}, timeout=10
            ).status_code
            for i in range(4)
        ]
        assert answers == [202, 202, 429, 429]  # a client cannot mint addresses


def test_a_proxy_header_from_an_untrusted_address_is_ignored():
    """The test client connects from 127.0.0.1, which is not among the trusted proxies here."""
    proxy = {"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": "10.99.0.0/16"}
    with web_server(THROTTLE_SUBMIT="3/minute", **proxy) as base:
        answers = [
            requests.post(
                f"{base}/factorize", json={"number": 4321}, headers={"X-Forwarded-For": f"10.0.0.{i}"}, timeout=10
            ).status_code
            for i in range(5)
        ]
        assert answers == [202, 202, 202, 429, 429]


def test_behind_a_trusted_chain_the_first_untrusted_address_is_the_client(api, settings):
    settings.THROTTLE_SUBMIT = "2/minute"
    settings.CLIENT_IP_HEADER = "X-Forwarded-For"
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]

    def post(remote: str, forwarded: str) -> int:
        return api.post(
            "/factorize", {"number": 99}, format="json", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded
        ).status_code

    # A client's own forged entries stand left of the address the proxies saw: they do not count.
    assert [post("10.0.0.5", f"192.0.2.{i}, 198.51.100.7, 10.0.0.9") for i in range(3)] == [202, 202, 429]
    assert post("10.0.0.5", "198.51.100.8") == 202  # another real client behind the same proxy
    assert post("10.0.0.5", "not-an-address") == 202  # garbage: the proxy's own address, a fresh bucket
    assert post("192.0.2.50", "198.51.100.8") == 202  # not a proxy: its own address
