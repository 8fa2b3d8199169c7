"""Prime counting from a sieve built once per process, the slow-to-start model stand-in: its
declaration (the sieve is in `model.py`)."""

from rest_framework import serializers

from factorize_app.tasks.deployment import Deployment
from factorize_app.tasks.fields import WholeNumberField
from factorize_app.tasks.registry import TaskType

SIEVE_LIMIT = 10**7


class PrimesInput(serializers.Serializer):
    n = WholeNumberField(min_value=2, max_value=SIEVE_LIMIT, help_text=f"Upper bound, 2 <= n <= {SIEVE_LIMIT}.")


class PrimesResult(serializers.Serializer):
    count = serializers.IntegerField(help_text="How many primes are <= n.")
    largest = serializers.IntegerField(help_text="The largest prime <= n.")


TASK_TYPE = TaskType(
    name="primes",
    path="primes",
    description="Count the primes up to n, from a sieve each worker builds once at start.",
    input_serializer=PrimesInput,
    result_serializer=PrimesResult,
    implementation="factorize_app.tasks.primes.model:PrimeCounter",
    examples=({"n": 1000}, {"n": 1000000}),
    # A 30 MB sieve, rarely used: scaled to zero when idle, up to 3 workers.
    deployment=Deployment(cpu_request="250m", max_workers=3),
)
