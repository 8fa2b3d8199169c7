"""Task types registered only for `make bench` (TASK_TYPES): a trivial job (one INCR), a 20 ms nap,
and the digits model without its batch handler."""

import dataclasses
import os
import threading
import time

import redis
from rest_framework import serializers

from factorize_app.tasks import TaskType

COUNTER = "bench:counter"


class IncrInput(serializers.Serializer):
    i = serializers.IntegerField(min_value=0)


class IncrResult(serializers.Serializer):
    count = serializers.IntegerField()


class Incrementer:
    def setup(self) -> None:
        self._redis = redis.Redis.from_url(os.environ["REDIS_URL"])

    def handle(self, data: dict) -> dict:
        return {"count": self._redis.incr(COUNTER)}


INCR = TaskType(
    name="bench_incr",
    path="bench-incr",
    description="Increment a counter (the benchmark's trivial job).",
    input_serializer=IncrInput,
    result_serializer=IncrResult,
    implementation="bench.task_types:Incrementer",
)


class NapInput(serializers.Serializer):
    tag = serializers.CharField(max_length=50)


class NapResult(serializers.Serializer):
    tag = serializers.CharField()


class Napper:
    def handle(self, data: dict) -> dict:
        """About 20 ms of work, as in the fairness scenario of the issue."""
        time.sleep(0.02)
        return {"tag": data["tag"]}


NAP = TaskType(
    name="bench_nap",
    path="bench-nap",
    description="Sleep 20 ms (the fairness scenario's job).",
    input_serializer=NapInput,
    result_serializer=NapResult,
    implementation="bench.task_types:Napper",
)


class DigitsOneByOne:
    """The digits model without its batch handler: the same classifier called once per image."""

    def __init__(self) -> None:
        from factorize_app.tasks.digits.model import DigitsClassifier

        self._model = DigitsClassifier()

    def setup(self) -> None:
        self._model.setup()

    def handle(self, data: dict) -> dict:
        return self._model.handle(data)


def _digits_one_by_one():
    from factorize_app.tasks.digits import TASK_TYPE

    return dataclasses.replace(
        TASK_TYPE,
        name="bench_digits_single",
        path="bench-digits-single",
        implementation="bench.task_types:DigitsOneByOne",
        _lock=threading.Lock(),
    )


DIGITS_ONE_BY_ONE = _digits_one_by_one()
