"""Factoring with sympy (sped up by gmpy2): imported only by workers of the factorization queue.

The stages are run here, one after another, rather than inside one `factorint` call, so that a
hard number reports what is happening: trial division, Pollard rho, then elliptic-curve factoring
(ECM) with growing bounds, reporting its curve count; sympy's complete `factorint` is the last
resort, so the answer is always the full factorization.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from sympy import factorint, isprime, perfect_power
from sympy.ntheory.factor_ import pollard_rho

# sympy's one-factor ECM step, which its public ecm() loops over (sympy is pinned).
_ecm_one_factor = importlib.import_module("sympy.ntheory.ecm")._ecm_one_factor

Progress = Callable[[float | None, str], None]

TRIAL_LIMIT = 2**15
RHO_STEPS = 50_000
# (B1, B2, curves): the bounds grow as the factor proves larger than the last round could find.
ECM_ROUNDS = ((2_000, 20_000, 25), (11_000, 110_000, 90), (50_000, 500_000, 300))
ECM_CURVES = sum(curves for _, _, curves in ECM_ROUNDS)
CURVES_PER_REPORT = 5


def _silent(fraction: float | None, message: str) -> None:
    """For callers that do not watch progress."""


class Factorizer:
    """No model to load: staged factoring of each validated input."""

    def handle(self, data: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
        report = progress or _silent
        report(None, "trial division")
        factors: Counter[int] = Counter()
        pending: list[int] = []
        for factor, exponent in factorint(data["number"], limit=TRIAL_LIMIT, use_rho=False, use_pm1=False,
                                          use_ecm=False).items():  # fmt: skip
            if isprime(factor) or factor < TRIAL_LIMIT**2:
                factors[int(factor)] += exponent
            else:
                pending += [int(factor)] * exponent
        while pending:
            composite = pending.pop()
            if isprime(composite):
                factors[composite] += 1
            elif power := perfect_power(composite):
                pending += [int(power[0])] * int(power[1])
            else:
                divisor = self._split(composite, report)
                pending += [divisor, composite // divisor]
        pairs = sorted(factors.items())
        return {
            "factorization": [[int(prime), int(exponent)] for prime, exponent in pairs],
            "factorization_str": " ".join(f"{prime}^{exponent}" for prime, exponent in pairs),
        }

    @staticmethod
    def _split(composite: int, report: Progress) -> int:
        """A proper divisor of a composite that is not a perfect power."""
        report(None, "Pollard rho")
        divisor = pollard_rho(composite, max_steps=RHO_STEPS)
        if divisor:
            return int(divisor)
        done = 0
        for bound1, bound2, curves in ECM_ROUNDS:
            for _ in range(0, curves, CURVES_PER_REPORT):
                report(done / ECM_CURVES, f"ECM, curve {done + 1} of up to {ECM_CURVES}")
                divisor = _ecm_one_factor(composite, bound1, bound2, CURVES_PER_REPORT, seed=done)
                done += CURVES_PER_REPORT
                if divisor and divisor != composite:
                    return int(divisor)
        report(None, "complete factorization (sympy factorint)")
        return int(next(iter(factorint(composite))))
