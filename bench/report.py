"""bench/RESULTS.md and its charts from a run's recorded results (bench/results.json): the
header, then each scenario's own section and its charts, then the scenarios that failed."""

from __future__ import annotations

from pathlib import Path

from bench import scenarios
from bench.charts import Bars, Curves, draw


def charts_of(recorded: dict) -> dict[str, list[Bars | Curves]]:
    """Each scenario's charts, by scenario name (those that draw none left out)."""
    found = {}
    for name, result in recorded["scenarios"].items():
        module = scenarios.load(name)
        if hasattr(module, "charts"):
            found[name] = module.charts(result)
    return found


def render(recorded: dict, charts_dir: str = "charts") -> str:
    """The Markdown of RESULTS.md; `charts_dir` is where the charts are, seen from it."""
    runs = recorded["runs"]
    lines = ["# Benchmark results", ""]
    if len(runs) == 1:
        (run,) = runs
        lines += [
            f"Machine: {run['machine']}. Load generator, Redis, the service and the peers share the machine.",
            f"Command: `make bench` (`{run['command']}`), {run['date']}.",
            f"Each figure is the median of {run['runs']} runs; ratios are ours / peer.",
            "",
        ]
    else:  # some scenarios run again since: each section comes from the run that names it
        lines += ["From several runs of `make bench` (load generator, Redis, the service and the peers share "
                  "the machine; each figure is the median of its run's runs; ratios are ours / peer):", ""]  # fmt: skip
        for run in runs:
            lines.append(f"- `{run['command']}`, {run['date']}, median of {run['runs']} runs, on {run['machine']}: "
                         f"{', '.join(run['scenarios'])}.")  # fmt: skip
        lines.append("")
    drawn = charts_of(recorded)
    for name in scenarios.NAMES:
        if name in recorded["scenarios"]:
            lines += scenarios.load(name).report(recorded["scenarios"][name])
            for chart in drawn.get(name, []):
                lines += [f"![{chart.title}]({charts_dir}/{chart.name}.svg)", ""]
    if recorded.get("failed"):
        lines += ["## Scenarios that failed in this run", "", *(f"- {line}" for line in recorded["failed"]), ""]
    return "\n".join(lines)


def write(recorded: dict, output: Path, charts: Path) -> list[Path]:
    """Write RESULTS.md at `output` and its charts into `charts`; answer the chart files."""
    written = draw([chart for found in charts_of(recorded).values() for chart in found], charts)
    seen_from = charts.relative_to(output.parent) if charts.is_relative_to(output.parent) else charts
    output.write_text(render(recorded, seen_from.as_posix()) + "\n")
    return written
