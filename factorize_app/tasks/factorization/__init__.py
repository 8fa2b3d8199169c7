"""Integer factorization, the seed's example workload (sympy, sped up by gmpy2)."""

from typing import Any

from django.conf import settings
from rest_framework import serializers
from sympy import factorint

from factorize_app.tasks.fields import WholeNumberField
from factorize_app.tasks.registry import TaskType


class FactorizationInput(serializers.Serializer):
    number = WholeNumberField(
        min_value=2,
        max_digits=lambda: settings.MAX_NUMBER_DIGITS,
        help_text="The integer to factor (>= 2), as a JSON integer or a string of digits.",
    )


class FactorizationResult(serializers.Serializer):
    factorization = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), min_length=2, max_length=2),
        help_text="[prime, exponent] pairs in increasing order of prime.",
    )
    factorization_str = serializers.CharField(help_text='The same, as text: "2^3 3^1 73^1 233^1".')


def factorize(data: dict[str, Any]) -> dict[str, Any]:
    pairs = sorted(factorint(data["number"]).items())
    return {
        "factorization": [[int(prime), int(exponent)] for prime, exponent in pairs],
        "factorization_str": " ".join(f"{prime}^{exponent}" for prime, exponent in pairs),
    }


TASK_TYPE = TaskType(
    name="factorization",
    path="factorize",
    description="Factor an integer into primes.",
    input_serializer=FactorizationInput,
    result_serializer=FactorizationResult,
    handler=factorize,
)
