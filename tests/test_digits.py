"""The digits model: a real scikit-learn classifier behind the queue, loaded only where it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import poll_until_done, process_tree, server_pid, wait_until, web_server

sklearn = pytest.importorskip("sklearn", reason="the digits requirements are not installed")

from factorize_app.tasks.digits import model  # noqa: E402 (needs scikit-learn)


def noisy(images, seed: int = 1):
    """Held-out images with every pixel moved by up to 2 grey levels: data it never saw."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.clip(images + rng.integers(-2, 3, size=images.shape), 0, 16).astype(int)


def test_the_classifier_recognises_held_out_and_noisy_digits():
    bundle = model.train()
    _, test_x, _, test_y = model.held_out_split()
    assert bundle["held_out_accuracy"] >= 0.9
    assert (bundle["classifier"].predict(noisy(test_x)) == test_y).mean() >= 0.9


def test_one_batch_call_answers_as_single_calls_do(settings, tmp_path):
    settings.MODEL_DIR = str(tmp_path)
    classifier = model.DigitsClassifier()
    classifier.setup()  # trains and stores the file: none was there
    assert model.model_path().exists()
    _, test_x, _, _ = model.held_out_split()
    items = [{"pixels": [int(v) for v in image]} for image in test_x[:20]]
    assert classifier.handle_batch(items) == [classifier.handle(item) for item in items]
    answer = classifier.handle(items[0])
    assert 0 <= answer["digit"] <= 9 and abs(sum(answer["probabilities"]) - 1) < 1e-3


def test_digits_end_to_end_through_the_queue(live_url, start_worker, tmp_path):
    start_worker("digits", MODEL_DIR=str(tmp_path))
    _, test_x, _, test_y = model.held_out_split()
    images = noisy(test_x[:100])
    batch = {"items": [{"pixels": [int(v) for v in image]} for image in images]}

    def done():
        answer = requests.post(f"{live_url}/digits/batch", json=batch, timeout=30).json()
        return answer if all(item["done"] for item in answer["results"]) else None

    results = wait_until(done, timeout=60, interval=0.2, what="the digits batch")["results"]
    correct = sum(item["digit"] == int(expected) for item, expected in zip(results, test_y[:100], strict=True))
    assert correct >= 90, correct
    one = poll_until_done(lambda: requests.post(f"{live_url}/digits", json=batch["items"][0], timeout=30))
    assert one["digit"] == results[0]["digit"] and len(one["probabilities"]) == 10


def mapped_packages(pid: int) -> set[str]:
    """The site-packages a process has loaded compiled code from (its memory maps)."""
    packages = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "site-packages/" in path:
            packages.add(path.split("site-packages/", 1)[1].split("/", 1)[0])
    return packages


def test_the_web_server_and_other_workers_never_load_the_model_packages(start_worker, tmp_path):
    with web_server() as url:
        for path in ("/", "/digits", "/factorize", "/queues", "/api/schema/", "/api/docs/", "/metrics", "/readyz"):
            assert requests.get(url + path, timeout=30).status_code == 200, path
        assert requests.post(f"{url}/digits", json={"pixels": [0] * 64}, timeout=30).status_code == 202
        assert requests.post(f"{url}/digits", json={"pixels": [99] * 64}, timeout=30).status_code == 400
        assert requests.post(f"{url}/digits/batch", json={"items": [{"pixels": [1] * 64}]}, timeout=30).ok
        loaded = set()
        for pid in process_tree(server_pid(url)):
            loaded |= mapped_packages(pid)
    assert not {"sklearn", "scipy", "numpy"} & loaded, loaded
    worker = start_worker("factorization")
    assert not {"sklearn", "scipy", "numpy"} & mapped_packages(worker.process.pid)
    digits_worker = start_worker("digits", MODEL_DIR=str(tmp_path))
    assert "sklearn" in mapped_packages(digits_worker.process.pid)  # the check can see them
