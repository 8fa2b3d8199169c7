"""Integer factorization, the seed's example workload: its declaration (the model is in `model.py`)."""

from django.conf import settings
from rest_framework import serializers

from factorize_app.tasks.deployment import Deployment
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


TASK_TYPE = TaskType(
    name="factorization",
    path="factorize",
    description="Factor an integer into primes.",
    input_serializer=FactorizationInput,
    result_serializer=FactorizationResult,
    implementation="factorize_app.tasks.factorization.model:Factorizer",
    examples=({"number": 1001}, {"number": "600851475143"}),
    # Jobs take milliseconds and traffic is steady: one worker always warm, up to 10.
    deployment=Deployment(min_workers=1, max_workers=10),
)
