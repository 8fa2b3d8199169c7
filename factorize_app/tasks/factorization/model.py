"""Factoring with sympy (sped up by gmpy2): imported only by workers of the factorization queue.

`factorize` runs the stages of sympy's `factorint` one by one, with its parameters and seeds, so
that a long job reports what it is doing and is no slower than one `factorint` call: trial
division, Fermat's method for close factors, rounds of trial division, Pollard p-1 and rho with
doubling bounds, then rounds of elliptic-curve factoring (ECM) with growing bounds. The ECM curves
are the ones `factorint` tries (the same seeds), run CURVES_PER_CALL at a time so their count can
be reported. Each call repeats sympy's per-call setup (about a quarter of a curve once sympy's
prime sieve reaches the round's B2, which it is grown to once a round); the curves themselves
run on gmpy2 integers (`factorint` runs them on Python integers), which more than pays for it.

`handle` is a generator: it yields each prime factor as `[prime, exponent]` as soon as a stage
has found it (the output a client sees streamed), and returns the whole factorization, the same
as before, as its result.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Generator, Iterator
from typing import Any

from gmpy2 import mpz
from sympy import factor_cache, factorint, isprime, sieve
from sympy.core.intfunc import num_digits
from sympy.external.gmpy import remove, sqrtrem
from sympy.external.gmpy import sqrt as isqrt
from sympy.ntheory.factor_ import pollard_pm1, pollard_rho

# factorint's own stage helpers and ECM step (sympy is pinned: requirements.txt).
_sympy_factor = importlib.import_module("sympy.ntheory.factor_")
_factorint_small, _trial, _check_termination = (
    _sympy_factor._factorint_small, _sympy_factor._trial, _sympy_factor._check_termination)  # fmt: skip
_ecm_one_factor = importlib.import_module("sympy.ntheory.ecm")._ecm_one_factor

Progress = Callable[[float | None, str], None]

# factorint's parameters (sympy 1.14): first trial division, then Fermat steps, then rounds of
# trial division, p-1 and rho with doubling bounds; numbers still of ECM_DIGITS digits after
# POLLARD_ROUNDS of them go to ECM rounds: B1 times 5 and curves times 4 each round, B2 = 100 B1.
SMALL_LIMIT, SMALL_FAIL_MAX = 2**15, 600
FERMAT_STEPS = 3
POLLARD_ROUNDS, ECM_DIGITS = 3, 24
ECM_B1, ECM_CURVES = 10_000, 50
CURVES_PER_CALL = 10
# sympy's sieve is grown to each round's B2 up to this (round 3's, 25 million: 1.6 million primes,
# 12 MB); past it each call sieves its own stage-2 primes, as factorint's one call does.
SIEVE_MAX = 25_000_000
# ECM round i (from 0) suits factors of up to about 20 + 5 i digits (GMP-ECM's table for the same B1):
# the curves "planned" are those of the rounds up to the one for a factor of half n's digits.
ECM_FIRST_DIGITS, ECM_DIGITS_PER_ROUND = 20, 5
RUNNING_MAX = 0.99  # the fraction reported while running: a plan is a guess, the end is not


def _silent(fraction: float | None, message: str) -> None:
    """For callers that do not watch progress."""


# What factor_steps yields: a prime factor found, [prime, exponent].
Found = Generator[list[int], None, dict[int, int]]


class Factorizer:
    """No model to load: staged factoring of each validated input, each prime streamed as found."""

    def handle(self, data: dict[str, Any], progress: Progress | None = None) -> Generator[list[int], None, dict]:
        factors = yield from factor_steps(data["number"], progress or _silent)
        pairs = sorted(factors.items())
        return {
            "factorization": [[prime, exponent] for prime, exponent in pairs],
            "factorization_str": " ".join(f"{prime}^{exponent}" for prime, exponent in pairs),
        }


class _Tracker:
    """Turns work done into a fraction that only grows: for a number too small for ECM, Pollard
    rho's steps against the fourth root of n (its worst case); for the others, ECM's curves,
    weighted by B1, against the rounds planned (their Pollard rounds are a short prelude: None)."""

    def __init__(self, report: Progress, n: int) -> None:
        self.report, self.last = report, 0.0
        self.rho_steps, self.rho_worst = 0, int(isqrt(isqrt(n))) if num_digits(n) < ECM_DIGITS else 0
        self.curves = self.work = self.rounds = self.planned_curves = self.planned_work = 0

    def tell(self, fraction: float | None, message: str) -> None:
        if fraction is not None:
            fraction = self.last = max(self.last, min(RUNNING_MAX, fraction))
        self.report(fraction, message)

    def pollard(self, steps: int) -> None:
        fraction = self.rho_steps / self.rho_worst if self.rho_worst else None
        self.tell(fraction, f"trial division, Pollard p-1 and rho ({steps} steps)")
        self.rho_steps += steps

    def plan_ecm(self, n: int) -> None:
        factor_digits = (num_digits(n) + 1) // 2  # the smallest factor's most
        while ECM_FIRST_DIGITS + ECM_DIGITS_PER_ROUND * self.rounds < factor_digits:
            self._plan_round()
        self._plan_round()

    def _plan_round(self) -> None:
        self.planned_curves += ECM_CURVES * 4**self.rounds
        self.planned_work += ECM_CURVES * 4**self.rounds * ECM_B1 * 5**self.rounds
        self.rounds += 1

    def ecm(self, curves: int, bound1: int) -> None:
        while self.curves >= self.planned_curves:  # past the plan (or a smaller cofactor's): one more round
            self._plan_round()
        self.tell(self.work / self.planned_work, f"ECM, curve {self.curves + 1} of up to {self.planned_curves}")
        self.curves += curves
        self.work += curves * bound1


def factorize(number: int, report: Progress) -> dict[int, int]:
    """{prime: exponent}, exactly `factorint(number)`'s, found by its own steps, reporting them."""
    steps = factor_steps(number, report)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def factor_steps(number: int, report: Progress) -> Found:
    """factorize() step by step: yields each prime factor as [prime, exponent] once a stage has
    found it (with its whole exponent: each stage divides a prime out entirely), and returns
    {prime: exponent}, exactly `factorint(number)`'s."""
    told: set[int] = set()
    factors = yield from _steps(number, report, told)
    yield from _news(factors, told)
    return factors


def _news(factors: dict, told: set[int]) -> Iterator[list[int]]:
    """The primes in `factors` not yielded yet, in increasing order."""
    for prime in sorted(set(factors) - told):
        told.add(prime)
        yield [int(prime), int(factors[prime])]


def _steps(number: int, report: Progress, told: set[int]) -> Found:
    if number < 10:
        return {int(p): e for p, e in factorint(number).items()}
    report(None, "trial division")
    factors: dict[int, int] = {}
    n, next_p = _factorint_small(factors, number, SMALL_LIMIT, SMALL_FAIL_MAX)
    if next_p == 0:
        if n > 1:
            factors[n] = 1
        return _plain(factors)
    while cached := factor_cache.get(n):
        n, exponent = remove(n, cached)
        factors[int(cached)] = int(exponent)
    if _finished(factors, n, next_p):
        return _plain(factors)
    if _fermat(factors, n):
        return _plain(factors)
    yield from _news(factors, told)  # trial division's: the small primes, before the long stages
    tracker = _Tracker(report, n)
    n, next_p, finished = yield from _pollard_rounds(factors, n, next_p, tracker, told)
    if not finished:
        yield from _ecm_rounds(factors, n, next_p, tracker, told)
    return _plain(factors)


def _plain(factors: dict) -> dict[int, int]:
    return {int(prime): int(exponent) for prime, exponent in factors.items()}


def _finished(factors: dict, n: int, next_p: int) -> bool:
    """factorint's check: n is 1, a prime or a prime power (then recorded in factors)."""
    return _check_termination(factors, n, None, True, True, True, False, next_p)


def _divide_out(factors: dict, n: int, divisor: int, next_p: int) -> int:
    """n without the primes of a divisor found (factored first if composite), as factorint does."""
    primes = [divisor] if divisor < next_p**2 or isprime(divisor) else factorint(divisor)
    return _trial(factors, n, primes)[0]


def _fermat(factors: dict, n: int) -> bool:
    """factorint's few steps of Fermat's method: n = a^2 - b^2 for a just above sqrt(n)."""
    a = isqrt(n) + 1
    if (n % 4 == 1) ^ (a & 1):
        a += 1
    b2 = a**2 - n
    for _ in range(FERMAT_STEPS):
        b, remainder = sqrtrem(b2)
        if not remainder:
            for side in (a - b, a + b):
                found = factorint(side)
                for prime, exponent in found.items():
                    factors[prime] = factors.get(prime, 0) + exponent
                factor_cache.add(n, found)
            return True
        b2 += (a + 1) << 2
        a += 2
    return False


def _pollard_rounds(
    factors: dict, n: int, next_p: int, tracker: _Tracker, told: set[int]
) -> Generator[list[int], None, tuple[int, int, bool]]:
    """factorint's rounds of trial division, p-1 and rho, each with twice the last one's bound,
    until n is factored or, past POLLARD_ROUNDS, is still large enough for ECM; yields each prime
    found on the way."""
    low, high = next_p, 2 * next_p
    limit = isqrt(n) + 1
    rounds = 0
    while True:
        high_ = min(high, limit)
        tracker.pollard(low)
        n, found = _trial(factors, n, sieve.primerange(low, high_))
        next_p = high_
        if found:
            yield from _news(factors, told)
        if found and _finished(factors, n, next_p):
            return n, next_p, True
        if high > limit:  # trial division has passed sqrt(n): what is left is prime
            if n > 1:
                factors[int(n)] = 1
            return n, next_p, True
        if not found:
            for method, options in ((pollard_pm1, {"B": low}), (pollard_rho, {"retries": 1, "max_steps": low})):
                if divisor := method(n, seed=high_, **options):
                    n = _divide_out(factors, n, divisor, next_p)
                    yield from _news(factors, told)
                    if _finished(factors, n, next_p):
                        return n, next_p, True
        rounds += 1
        if rounds >= POLLARD_ROUNDS and num_digits(n) >= ECM_DIGITS:
            return n, next_p, False
        low, high = high, high * 2


def _ecm_rounds(factors: dict, n: int, next_p: int, tracker: _Tracker, told: set[int]) -> Iterator[list[int]]:
    """factorint's ECM rounds, until n is factored; each round's curves, CURVES_PER_CALL at a
    time; yields each prime found on the way."""
    tracker.plan_ecm(n)
    bound1, curves = ECM_B1, ECM_CURVES
    while True:
        bound2 = 100 * bound1
        sieve.extend(min(bound2, SIEVE_MAX))  # once a round, so each call's stage-2 setup finds its primes
        draw = random.Random(bound1).randint  # factorint's curves: sympy's generator, seeded with B1
        n = int(n)
        modulus = mpz(n)
        for start in range(0, curves, CURVES_PER_CALL):
            count = min(CURVES_PER_CALL, curves - start)
            tracker.ecm(count, bound1)
            sigmas = [draw(6, n - 1) for _ in range(count)]
            divisor = _ecm_one_factor(modulus, bound1, bound2, count, seed=sigmas)
            if divisor:
                n = _divide_out(factors, n, int(divisor), next_p)
                yield from _news(factors, told)
                if _finished(factors, n, next_p):
                    return
                break
        bound1, curves = bound1 * 5, curves * 4
