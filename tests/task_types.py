"""Task types that exist only for the tests: a slow setup, a slow job, a failing job, a job with a
batch handler, one that kills its own worker, and file outputs (a file of any size, a large JSON
result)."""

import hashlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from rest_framework import serializers

from factorize_app.tasks import OutputFile, TaskType
from factorize_app.tasks.fields import FileOutput

SETUP_COUNTER = "tests:slow_setup:setups"


class TagInput(serializers.Serializer):
    tag = serializers.CharField(max_length=50)


class SleepInput(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=30)
    tag = serializers.CharField(max_length=50, required=False, default="")


class NumberInput(serializers.Serializer):
    x = serializers.IntegerField()


class DoubledResult(serializers.Serializer):
    double = serializers.IntegerField()
    batch_size = serializers.IntegerField()


class EchoResult(serializers.Serializer):
    echo = serializers.CharField()
    pid = serializers.IntegerField()


class SleptResult(serializers.Serializer):
    slept = serializers.FloatField()
    pid = serializers.IntegerField()


class Echo:
    def handle(self, data: dict) -> dict:
        return {"echo": data["tag"], "pid": os.getpid()}


class SlowSetupEcho(Echo):
    def setup(self) -> None:
        """Takes a second like a model load, and counts itself in Redis so the test can see it."""
        time.sleep(1)
        redis.Redis.from_url(os.environ["REDIS_URL"]).incr(SETUP_COUNTER)


class Sleeper:
    def handle(self, data: dict) -> dict:
        time.sleep(data["seconds"])
        return {"slept": data["seconds"], "pid": os.getpid()}


class Doubler:
    def handle(self, data: dict) -> dict:
        if data["x"] == 13:
            raise ValueError("13 is unlucky")
        return {"double": 2 * data["x"], "batch_size": 1}

    def handle_batch(self, inputs: list[dict]) -> list[dict]:
        """The micro-batched path: one call for many inputs; one bad input fails the whole call."""
        if any(data["x"] == 13 for data in inputs):
            raise ValueError("13 is unlucky")
        return [{"double": 2 * data["x"], "batch_size": len(inputs)} for data in inputs]


class SlowDoubler(Doubler):
    """A batch handler that takes a while, so a job can be stopped during its one call."""

    def handle_batch(self, inputs: list[dict]) -> list[dict]:
        time.sleep(2)
        return super().handle_batch(inputs)


class LettersResult(serializers.Serializer):
    letters = serializers.ListField(child=serializers.CharField())


class Speller:
    """Streams its tag letter by letter, each tagged with the size of the call that made it; a
    generator that returns nothing, so its result is its pieces (tasks/streaming.py)."""

    def handle(self, data: dict):
        for letter in data["tag"]:
            yield f"{letter}/1"

    def handle_batch(self, inputs: list[dict]):
        """Per item: (index, piece) pairs, the items' letters interleaved."""
        for position in range(max(len(data["tag"]) for data in inputs)):
            for index, data in enumerate(inputs):
                if position < len(data["tag"]):
                    yield index, f"{data['tag'][position]}/{len(inputs)}"


class Killer:
    def handle(self, data: dict) -> dict:
        """Kills the worker process running it, as a segfault or the OOM killer would."""
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class Failer:
    def handle(self, data: dict) -> dict:
        raise ValueError(f"cannot handle {data['tag']}")


SLOW_SETUP = TaskType(
    name="slow_setup",
    path="slow-setup",
    description="Echo, after a one-second setup.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    implementation="tests.task_types:SlowSetupEcho",
)
SLEEPY = TaskType(
    name="sleepy",
    path="sleepy",
    description="Sleep for a while.",
    input_serializer=SleepInput,
    result_serializer=SleptResult,
    implementation="tests.task_types:Sleeper",
    job_timeout=3,
)
FAILING = TaskType(
    name="failing",
    path="failing",
    description="Always raises.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    implementation="tests.task_types:Failer",
)
BATCHED = TaskType(
    name="batched",
    path="batched",
    description="Double a number, in batches.",
    input_serializer=NumberInput,
    result_serializer=DoubledResult,
    implementation="tests.task_types:Doubler",
    max_batch_size=50,
    max_batch_delay=0.3,  # long, so that a test's one-by-one submits surely share a batch
)
SLOW_BATCH = TaskType(
    name="slow_batch",
    path="slow-batch",
    description="Double numbers, two seconds a batch.",
    input_serializer=NumberInput,
    result_serializer=DoubledResult,
    implementation="tests.task_types:SlowDoubler",
    max_batch_delay=0.5,  # the test's four submits share one batch
)
SPELLER = TaskType(
    name="speller",
    path="speller",
    description="Stream a tag's letters, in batches.",
    input_serializer=TagInput,
    result_serializer=LettersResult,
    implementation="tests.task_types:Speller",
    max_batch_delay=0.3,
)
CRASHING = TaskType(
    name="crashing",
    path="crashing",
    description="Kills its worker.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    implementation="tests.task_types:Killer",
)


# --- file outputs (tests/test_file_outputs.py) -----------------------------------------------

MIB = 1024 * 1024


def seeded_chunks(seed: str, size: int) -> Iterator[bytes]:
    """`size` bytes of `seed`'s digest chain, in chunks of at most 1 MiB: bytes a test can make
    again to check a download, unlike any other test's (no two seeds share a blob)."""
    block = b"".join(hashlib.sha256(f"{seed}:{index}".encode()).digest() for index in range(MIB // 32))
    for start in range(0, size, MIB):
        yield block[: min(MIB, size - start)]


class FileSpec(serializers.Serializer):
    size = serializers.IntegerField(min_value=0, max_value=200 * MIB)
    seed = serializers.CharField(max_length=50)
    given_as = serializers.ChoiceField(choices=["output_file", "path", "bytes"], default="output_file")


class FileMade(serializers.Serializer):
    file = FileOutput(content_type="application/octet-stream", help_text="`size` bytes made from `seed`.")
    batch_size = serializers.IntegerField()


class LargeJsonSpec(serializers.Serializer):
    kilobytes = serializers.IntegerField(min_value=1, max_value=50_000)


class LargeJson(serializers.Serializer):
    values = serializers.ListField(child=serializers.IntegerField())


class FileMaker:
    """Returns a file as a model would: written to a path (an OutputFile the worker removes once
    stored, or a bare Path) or given as bytes."""

    def handle(self, data: dict) -> dict:
        return {"file": self._file(data), "batch_size": 1}

    def handle_batch(self, inputs: list[dict]) -> list[dict]:
        return [{"file": self._file(data), "batch_size": len(inputs)} for data in inputs]

    def _file(self, data: dict):
        chunks = seeded_chunks(data["seed"], data["size"])
        if data["given_as"] == "bytes":
            return b"".join(chunks)
        path = Path(tempfile.mkdtemp(prefix="file-out-")) / f"{data['seed']}.bin"
        with path.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        if data["given_as"] == "path":
            return path
        return OutputFile(path=path, content_type="application/x-test", name=f"{data['seed']}.bin", delete_after=True)


class JsonMaker:
    def handle(self, data: dict) -> dict:
        """About `kilobytes` of JSON: integers of 7 digits, 8 bytes each with the separator."""
        count = data["kilobytes"] * 1024 // 9
        return {"values": list(range(1_000_000, 1_000_000 + count))}


FILE_OUT = TaskType(
    name="file_out",
    path="file-out",
    description="Return a file of the size asked for.",
    input_serializer=FileSpec,
    result_serializer=FileMade,
    implementation="tests.task_types:FileMaker",
    examples=({"size": 10, "seed": "example"},),
    max_batch_delay=0.5,  # the test's submits share one batch
)
SHORT_FILE_OUT = TaskType(
    name="short_file_out",
    path="short-file-out",
    description="Return a file, kept two seconds.",
    input_serializer=FileSpec,
    result_serializer=FileMade,
    implementation="tests.task_types:FileMaker",
    examples=({"size": 10, "seed": "example"},),
    result_ttl=2,
)
LARGE_JSON = TaskType(
    name="large_json",
    path="large-json",
    description="Return a large JSON result.",
    input_serializer=LargeJsonSpec,
    result_serializer=LargeJson,
    implementation="tests.task_types:JsonMaker",
    examples=({"kilobytes": 1},),
)
