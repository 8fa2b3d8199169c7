"""Input fields shared by task types."""

from typing import Any

from rest_framework import serializers


class WholeNumberField(serializers.Field):
    """An integer given as a JSON number or a string of digits, never a float or a boolean.

    Digit strings let JavaScript clients send integers beyond 2**53 without losing digits.
    """

    default_error_messages = {
        "invalid": "A valid integer is required (a JSON integer or a string of digits).",
        "max_digits": "Ensure this number has no more than {max_digits} digits.",
        "min_value": "Ensure this value is greater than or equal to {min_value}.",
        "max_value": "Ensure this value is less than or equal to {max_value}.",
    }

    def __init__(self, *, min_value: int, max_value: int | None = None, max_digits: Any = None, **kwargs):
        self.min_value = min_value
        self.max_value = max_value
        self._max_digits = max_digits  # an int, or a callable read at validation time (a setting)
        super().__init__(**kwargs)

    @property
    def max_digits(self) -> int | None:
        return self._max_digits() if callable(self._max_digits) else self._max_digits

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, (int, str)):
            self.fail("invalid")
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            self.fail("invalid")
        max_digits = self.max_digits
        if max_digits is not None:
            too_long = len(data) > max_digits if isinstance(data, str) else abs(data) >= 10**max_digits
            if too_long:
                self.fail("max_digits", max_digits=max_digits)
        value = int(data)
        if value < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        if self.max_value is not None and value > self.max_value:
            self.fail("max_value", max_value=self.max_value)
        return value

    def to_representation(self, value: int) -> int:
        return int(value)
