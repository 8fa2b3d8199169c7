"""Factoring with sympy (sped up by gmpy2): imported only by workers of the factorization queue."""

from typing import Any

from sympy import factorint


class Factorizer:
    """No model to load: sympy's factorint on each validated input."""

    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        pairs = sorted(factorint(data["number"]).items())
        return {
            "factorization": [[int(prime), int(exponent)] for prime, exponent in pairs],
            "factorization_str": " ".join(f"{prime}^{exponent}" for prime, exponent in pairs),
        }
