"""The model's own work: the factorization handler, progress reports and all, against one plain
`sympy.factorint` call on the same numbers in the same process (bench/handler_speed.py)."""

from __future__ import annotations

from bench.charts import Bars
from bench.context import Bench
from bench.measure import ratio


def run(bench: Bench) -> dict:
    from bench import handler_speed

    numbers = sorted(handler_speed.default_numbers())
    if bench.options.fraction < 1:  # a quick run: the smallest numbers, the hard ones last to go
        numbers = numbers[: bench.options.size(len(numbers), 3)]
    result = handler_speed.measure(numbers)  # CPU time, the figure that counts, barely varies between runs
    print(f"  handler / factorint: {result['ratio']:.2f} wall, {result['ratio_cpu']:.2f} CPU", flush=True)
    return result


def report(result: dict) -> list[str]:
    rows = [row for row in result["numbers"] if row["factorint_cpu"] >= 0.05]  # the easy ones take no time
    easy = len(result["numbers"]) - len(rows)
    return [
        "## The model's own work: the handler with its progress reports against plain factorint",
        "",
        "Same process, the order alternated, sympy's factor cache cleared before each call; the least of "
        "the runs counts. CPU time is the figure that other processes on the machine cannot inflate.",
        "",
        "| number | digits | handler s | factorint s | handler CPU s | factorint CPU s | CPU ratio | reports |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {row['number']} | {len(str(row['number']))} | {row['ours']:.2f} | {row['factorint']:.2f} | "
            f"{row['ours_cpu']:.2f} | {row['factorint_cpu']:.2f} | {ratio(row['ours_cpu'], row['factorint_cpu'])} | "
            f"{row['reports']} |"
            for row in rows
        ),
        "",
        f"- In all ({len(result['numbers'])} numbers, {easy} of them easy): handler / factorint "
        f"{result['ratio']:.2f}× wall, **{result['ratio_cpu']:.2f}× CPU** (goal: at most 1.0×).",
        "",
    ]


def charts(result: dict) -> list[Bars]:
    return [
        Bars(
            name="handler_speed",
            title="Factoring the bench's numbers: the handler with progress against plain factorint",
            unit="seconds in all",
            groups={
                "wall": {"ours (handler)": result["ours"], "sympy.factorint": result["factorint"]},
                "CPU": {"ours (handler)": result["ours_cpu"], "sympy.factorint": result["factorint_cpu"]},
            },
        )
    ]
