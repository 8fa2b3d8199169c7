"""Fair queues: workers serve a task type's clients in turn; QUEUE_ORDER=fifo keeps first come, first served."""

import pytest
from rq.registry import FinishedJobRegistry

from factorize_app.models import ApiKey
from tests.conftest import wait_done

pytestmark = pytest.mark.django_db


def _batch(api, client: str, tags: list[str]) -> None:
    """One client's jobs, sent with an API key of its own."""
    items = [{"seconds": 0.02, "tag": tag} for tag in tags]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiKey.create_key(name=client)[1]}"}
    response = api.post("/sleepy/batch", {"items": items}, format="json", **auth)
    assert response.status_code == 200 and {r["status"] for r in response.json()["results"]} == {"queued"}


def test_a_second_client_is_not_stuck_behind_the_first_clients_thousand_jobs(api, redis_conn, start_worker):
    _batch(api, "client-a", [f"a{i}" for i in range(1000)])
    _batch(api, "client-b", ["b0"])
    assert redis_conn.llen("rq:queue:sleepy") == 1001  # RQ's list (dashboard, KEDA) still holds them all
    assert api.get("/sleepy", HTTP_ACCEPT="application/json").json()["load"] == 1001
    start_worker("sleepy")
    wait_done(api, "/sleepy", seconds=0.02, tag="b0", timeout=60)
    a_done = FinishedJobRegistry("sleepy", connection=redis_conn).count - 1
    print(f"[fairness] client B's job finished after {a_done} of client A's 1000")
    assert a_done < 100


def test_fifo_order_serves_first_come_first(api, settings, redis_conn, start_worker):
    settings.QUEUE_ORDER = "fifo"
    _batch(api, "client-a", [f"a{i}" for i in range(30)])
    _batch(api, "client-b", ["b0"])
    start_worker("sleepy", QUEUE_ORDER="fifo")
    wait_done(api, "/sleepy", seconds=0.02, tag="b0", timeout=60)
    assert FinishedJobRegistry("sleepy", connection=redis_conn).count == 31  # B's came last
