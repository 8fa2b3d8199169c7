"""The benchmark's trivial job, registered only for `make bench` (TASK_TYPES): one INCR."""

import os
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
