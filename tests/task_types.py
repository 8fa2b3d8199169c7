"""Task types that exist only for the tests: a slow setup, a slow job and a failing job."""

import os
import time

import redis
from rest_framework import serializers

from factorize_app.tasks import TaskType

SETUP_COUNTER = "tests:slow_setup:setups"


class TagInput(serializers.Serializer):
    tag = serializers.CharField(max_length=50)


class SleepInput(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=30)
    tag = serializers.CharField(max_length=50, required=False, default="")


class EchoResult(serializers.Serializer):
    echo = serializers.CharField()
    pid = serializers.IntegerField()


class SleptResult(serializers.Serializer):
    slept = serializers.FloatField()
    pid = serializers.IntegerField()


def count_setup() -> None:
    """Takes a second like a model load, and counts itself in Redis so the test can see it."""
    time.sleep(1)
    redis.Redis.from_url(os.environ["REDIS_URL"]).incr(SETUP_COUNTER)


def echo(data: dict) -> dict:
    return {"echo": data["tag"], "pid": os.getpid()}


def sleep(data: dict) -> dict:
    time.sleep(data["seconds"])
    return {"slept": data["seconds"], "pid": os.getpid()}


def fail(data: dict) -> dict:
    raise ValueError(f"cannot handle {data['tag']}")


SLOW_SETUP = TaskType(
    name="slow_setup",
    path="slow-setup",
    description="Echo, after a one-second setup.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    handler=echo,
    setup=count_setup,
)
SLEEPY = TaskType(
    name="sleepy",
    path="sleepy",
    description="Sleep for a while.",
    input_serializer=SleepInput,
    result_serializer=SleptResult,
    handler=sleep,
    job_timeout=3,
)
FAILING = TaskType(
    name="failing",
    path="failing",
    description="Always raises.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    handler=fail,
)
