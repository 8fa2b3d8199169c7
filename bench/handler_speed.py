"""The factorization handler (progress reported) against one plain `sympy.factorint` call.

Both run in this process, on the same numbers, in alternating order (one number ours first, the
next factorint first), with sympy's factor cache emptied before each call: it remembers a factor
found, and would answer the second run at once. Seconds are wall time and this process's CPU time
(the CPU figure is the one other processes on a shared machine do not disturb).

    .venv/bin/python bench/handler_speed.py [NUMBER ...]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sympy import factor_cache, factorint, nextprime  # noqa: E402

from factorize_app.tasks.factorization.model import Factorizer  # noqa: E402

# Issue 33's four hard semiprimes (38-42 digits).
ISSUE_NUMBERS = (
    172453354096967975452743878682526418908247,
    57076427226514620534495682422082583587,
    5665568168802429721662553965542048811413,
    746348292062646812869822858607899525792999,
)
HARD_DIGITS = (30, 31, 32, 33, 34, 36, 37, 38, 39, 40)  # balanced semiprimes of these sizes
SEED = 33
EASY_NUMBERS = (408216, 600851475143, 2**64 + 1, 10**30, 3**40 * 7, 2**127 - 1, 1000003**3)


def hard_semiprimes(digits: tuple[int, ...] = HARD_DIGITS, seed: int = SEED) -> list[int]:
    """Per size, a product of two random primes of half its digits each (the same every run)."""
    rng = random.Random(seed)
    numbers = []
    for size in digits:
        low = size // 2
        p = nextprime(rng.randrange(10 ** (low - 1), 10**low))
        q = nextprime(rng.randrange(10 ** (size - low - 1), 10 ** (size - low)))
        numbers.append(p * q)
    return numbers


def default_numbers() -> list[int]:
    return [*ISSUE_NUMBERS, *hard_semiprimes(), *EASY_NUMBERS]


def _timed(call, number: int) -> tuple[float, float, dict[int, int]]:
    factor_cache.cache_clear()
    wall, cpu = time.perf_counter(), time.process_time()
    found = call(number)
    return time.perf_counter() - wall, time.process_time() - cpu, found


def _plain(number: int) -> dict[int, int]:
    return {int(p): int(e) for p, e in factorint(number).items()}


def _one(handler: Factorizer, number: int, ours_first: bool) -> dict:
    reports: list[tuple[float | None, str]] = []

    def ours(n: int) -> dict[int, int]:
        result = handler.handle({"number": n}, progress=lambda fraction, message: reports.append((fraction, message)))
        return dict(result["factorization"])

    order = [("ours", ours), ("factorint", _plain)]
    runs = {name: _timed(call, number) for name, call in (order if ours_first else order[::-1])}
    assert runs["ours"][2] == runs["factorint"][2], f"{number}: {runs['ours'][2]} != {runs['factorint'][2]}"
    return {
        "number": number,
        "ours": runs["ours"][0],
        "factorint": runs["factorint"][0],
        "ours_cpu": runs["ours"][1],
        "factorint_cpu": runs["factorint"][1],
        "reports": len(reports),
    }


def measure(numbers: list[int] | None = None) -> dict:
    """Per number: seconds (wall and CPU) for ours and for plain factorint; totals and ratios.

    {"numbers": [{"number", "ours", "factorint", "ours_cpu", "factorint_cpu", "reports"}, ...],
     "ours", "factorint", "ours_cpu", "factorint_cpu" (totals), "ratio", "ratio_cpu"}
    Raises AssertionError if a factorization differs from factorint's."""
    handler = Factorizer()
    rows = [_one(handler, number, index % 2 == 0) for index, number in enumerate(numbers or default_numbers())]
    totals = {key: sum(row[key] for row in rows) for key in ("ours", "factorint", "ours_cpu", "factorint_cpu")}
    return {
        "numbers": rows,
        **totals,
        "ratio": totals["ours"] / totals["factorint"],
        "ratio_cpu": totals["ours_cpu"] / totals["factorint_cpu"],
    }


def main() -> None:
    numbers = [int(arg) for arg in sys.argv[1:]] or None
    result = measure(numbers)
    columns = ("number", "digits", "ours s", "factorint s", "ratio", "ours CPU s", "factorint CPU s", "reports")
    widths = (44, 6, 8, 11, 6, 10, 15, 7)
    print(" ".join(f"{name:>{width}}" for name, width in zip(columns, widths, strict=True)))
    for row in [*result["numbers"], {**result, "number": "total", "reports": ""}]:
        cells = (
            row["number"],
            len(str(row["number"])) if row["number"] != "total" else "",
            f"{row['ours']:.2f}",
            f"{row['factorint']:.2f}",
            f"{row['ours'] / row['factorint']:.2f}" if row["factorint"] else "-",
            f"{row['ours_cpu']:.2f}",
            f"{row['factorint_cpu']:.2f}",
            row["reports"],
        )
        print(" ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)))
    print(f"ratio ours / factorint: {result['ratio']:.2f} wall, {result['ratio_cpu']:.2f} CPU")


if __name__ == "__main__":
    main()
