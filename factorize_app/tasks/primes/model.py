"""The sieve: imported only by workers of the primes queue."""

from typing import Any

from sympy.ntheory.generate import Sieve

from factorize_app.tasks.primes import SIEVE_LIMIT


class PrimeCounter:
    """The "model": every prime up to SIEVE_LIMIT (about a second and 30 MB), built in setup()."""

    def __init__(self) -> None:
        self._sieve: Sieve | None = None

    def setup(self) -> None:
        sieve = Sieve()
        sieve.extend(SIEVE_LIMIT)
        self._sieve = sieve

    def handle(self, data: dict[str, Any]) -> dict[str, Any]:
        if self._sieve is None:
            raise RuntimeError("primes: setup() has not run in this process")
        index, _ = self._sieve.search(data["n"])  # 1-based index of the largest prime <= n
        return {"count": index, "largest": int(self._sieve[index])}
