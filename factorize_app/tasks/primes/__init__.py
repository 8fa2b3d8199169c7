"""Prime counting from a sieve built once per process: the slow-to-start model stand-in."""

from typing import Any

from rest_framework import serializers
from sympy.ntheory.generate import Sieve

from factorize_app.tasks.fields import WholeNumberField
from factorize_app.tasks.registry import TaskType

SIEVE_LIMIT = 10**7
_sieve: Sieve | None = None


class PrimesInput(serializers.Serializer):
    n = WholeNumberField(min_value=2, max_value=SIEVE_LIMIT, help_text=f"Upper bound, 2 <= n <= {SIEVE_LIMIT}.")


class PrimesResult(serializers.Serializer):
    count = serializers.IntegerField(help_text="How many primes are <= n.")
    largest = serializers.IntegerField(help_text="The largest prime <= n.")


def load_sieve() -> None:
    """The "model": every prime up to SIEVE_LIMIT (about a second and 30 MB)."""
    global _sieve
    sieve = Sieve()
    sieve.extend(SIEVE_LIMIT)
    _sieve = sieve


def count_primes(data: dict[str, Any]) -> dict[str, Any]:
    if _sieve is None:
        raise RuntimeError("primes: setup() has not run in this process")
    index, _ = _sieve.search(data["n"])  # 1-based index of the largest prime <= n
    return {"count": index, "largest": int(_sieve[index])}


TASK_TYPE = TaskType(
    name="primes",
    path="primes",
    description="Count the primes up to n, from a sieve each worker builds once at start.",
    input_serializer=PrimesInput,
    result_serializer=PrimesResult,
    handler=count_primes,
    setup=load_sieve,
)
