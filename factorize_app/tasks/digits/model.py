"""The digits model: a scikit-learn classifier of 8x8 grey-level images of handwritten digits.

Trained on scikit-learn's bundled `load_digits` data (no download), with a fifth of it held out
to measure accuracy, and stored as a file: once at image build (`python -m
factorize_app.tasks.digits.model`), or at a worker's first setup when no file is there. Only
workers listening to the `digits` queue import this module (and scikit-learn).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from django.conf import settings
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from factorize_app.tasks.digits.images import pixels_from_image

MODEL_FILE = "digits-classifier.joblib"
HELD_OUT = 0.2
SEED = 0


def model_path() -> Path:
    return Path(settings.MODEL_DIR) / MODEL_FILE


def held_out_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same train/held-out split every time: the held-out images are never trained on."""
    digits = load_digits()
    return train_test_split(digits.data, digits.target, test_size=HELD_OUT, random_state=SEED, stratify=digits.target)


def train() -> dict[str, Any]:
    """Fit the classifier on the training part and measure it on the held-out part."""
    train_x, test_x, train_y, test_y = held_out_split()
    # A support vector classifier with calibrated probabilities: 98% on the held-out fifth. Like
    # most models it pays a fixed cost per call, so one call for a batch beats one per image.
    classifier = CalibratedClassifierCV(SVC(), ensemble=False)
    classifier.fit(train_x, train_y)
    return {"classifier": classifier, "held_out_accuracy": float(classifier.score(test_x, test_y))}


def save(bundle: dict[str, Any], path: Path) -> None:
    """Write atomically, so a worker starting meanwhile never loads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as temporary:
        joblib.dump(bundle, temporary)
    os.chmod(temporary.name, 0o644)  # read by workers running as another user than the builder
    os.replace(temporary.name, path)


class DigitsClassifier:
    """Loaded once per worker process; classifies one image or a whole batch in one call."""

    def __init__(self) -> None:
        self._classifier = None

    def setup(self) -> None:
        path = model_path()
        if not path.exists():
            save(train(), path)
        # The file is one this service wrote (joblib is pickle: never load one from elsewhere).
        self._classifier = joblib.load(path)["classifier"]

    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.handle_batch([data])[0]

    def handle_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._classifier is None:
            raise RuntimeError("digits: setup() has not run in this process")
        # An image file (a local path) is made into the 64 grey levels first; ImageRefused fails its job.
        pixels = [item["pixels"] if "pixels" in item else pixels_from_image(item["image"]) for item in items]
        images = np.asarray(pixels, dtype=np.float64)
        probabilities = self._classifier.predict_proba(images)
        classes = self._classifier.classes_
        return [
            {"digit": int(classes[row.argmax()]), "probabilities": [round(float(p), 6) for p in row]}
            for row in probabilities
        ]


if __name__ == "__main__":  # at image build: train once, into MODEL_DIR
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    bundle = train()
    save(bundle, model_path())
    print(f"digits: held-out accuracy {bundle['held_out_accuracy']:.3f}, saved to {model_path()}")
