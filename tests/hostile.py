"""What the hostile-input tests share: the two lanes a request can take (the lean lane, or Django and
DRF when any cookie is sent), and what every answer to hostile input must be."""

from __future__ import annotations

import requests

LANES = {"lean": {}, "django": {"Cookie": "lane=off"}}  # any cookie sends a request through Django


def assert_json_answer(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), (what, response.headers)
        assert isinstance(response.json(), dict), what


def send(http: requests.Session, method: str, url: str, lane: str, **kwargs) -> requests.Response:
    headers = {**LANES[lane], **kwargs.pop("headers", {})}
    if lane == "lean":
        http.cookies.clear()
    try:
        return http.request(method, url, headers=headers, timeout=30, **kwargs)
    except requests.ConnectionError:
        # A kept-alive connection that the server closed after answering without reading a body can
        # be reused before the close is seen; once more on a fresh one (a server that fails, fails again).
        http.close()
        return http.request(method, url, headers=headers, timeout=30, **kwargs)
