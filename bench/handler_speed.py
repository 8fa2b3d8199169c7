"""The factorization handler (progress reported) against one plain `sympy.factorint` call.

Both run in this process, on the same numbers, in alternating order (one number ours first, the
next factorint first), with sympy's factor cache emptied before each call: it remembers a factor
found, and would answer the second run at once. Seconds are wall time and this process's CPU time
(the CPU figure is the one other processes on a shared machine do not disturb).

    .venv/bin/python bench/handler_speed.py [--repeats N] [NUMBER ...]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sympy import factor_cache, factorint, nextprime  # noqa: E402

from factorize_app.tasks.factorization.model import Factorizer  # noqa: E402
from factorize_app.tasks.streaming import run_to_end  # noqa: E402

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


def _one(handler: Factorizer, number: int, ours_first: bool, repeats: int) -> dict:
    reports: list[tuple[float | None, str]] = []

    def ours(n: int) -> dict[int, int]:
        reports.clear()
        answer = handler.handle({"number": n}, progress=lambda fraction, message: reports.append((fraction, message)))
        result = run_to_end(answer)  # a generator: it streams each factor found
        return dict(result["factorization"])

    runs: dict[str, list[tuple[float, float, dict[int, int]]]] = {"ours": [], "factorint": []}
    for repeat in range(repeats):
        order = [("ours", ours), ("factorint", _plain)]
        for name, call in order if ours_first == (repeat % 2 == 0) else order[::-1]:
            runs[name].append(_timed(call, number))
    found = {name: {tuple(sorted(run[2].items())) for run in timings} for name, timings in runs.items()}
    assert found["ours"] == found["factorint"] and len(found["ours"]) == 1, f"{number}: {found}"
    return {
        "number": number,
        "ours": min(run[0] for run in runs["ours"]),
        "factorint": min(run[0] for run in runs["factorint"]),
        "ours_cpu": min(run[1] for run in runs["ours"]),
        "factorint_cpu": min(run[1] for run in runs["factorint"]),
        "reports": len(reports),
    }


def measure(numbers: list[int] | None = None, repeats: int = 1) -> dict:
    """Per number: seconds (wall and CPU, the least of `repeats` runs) for ours and for plain
    factorint; totals and ratios.

    {"numbers": [{"number", "ours", "factorint", "ours_cpu", "factorint_cpu", "reports"}, ...],
     "ours", "factorint", "ours_cpu", "factorint_cpu" (totals), "ratio", "ratio_cpu"}
    Raises AssertionError if a factorization differs from factorint's."""
    handler = Factorizer()
    numbers = numbers or default_numbers()
    rows = [_one(handler, number, index % 2 == 0, repeats) for index, number in enumerate(numbers)]
    totals = {key: sum(row[key] for row in rows) for key in ("ours", "factorint", "ours_cpu", "factorint_cpu")}
    return {
        "numbers": rows,
        **totals,
        "ratio": totals["ours"] / totals["factorint"],
        "ratio_cpu": totals["ours_cpu"] / totals["factorint_cpu"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", type=int, help="to factor (default: issue 33's, 10 more, easy ones)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side per number; the least counts")
    args = parser.parse_args()
    result = measure(args.numbers or None, repeats=args.repeats)
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
