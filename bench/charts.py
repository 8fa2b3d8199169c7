"""The results drawn: each scenario says which charts its result makes (`Bars` of ours against the
peers, `Curves` of a figure by process count), and `draw` writes them as SVG files beside
bench/RESULTS.md (bench/charts/), which the docs site shows (bench/docs_charts.py).

SVGs with a fixed hash salt and no date: the same figures give the same file, so a commit shows
only the charts whose figures changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

CHARTS = Path(__file__).resolve().parent / "charts"
OURS_COLOURS = ("#1f6feb", "#6ca4f8", "#a8c8fb")  # ours, then our variants (e.g. with an access log)
PEER_COLOURS = ("#2da44e", "#d29922", "#8b949e", "#a371f7", "#cf222e")


@dataclasses.dataclass(frozen=True)
class Bars:
    """One group of bars per case (e.g. "1 process"), one bar per engine in each; ours are the
    engines whose label starts with "ours"."""

    name: str
    title: str
    unit: str
    groups: dict[str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Curves:
    """A figure by process count, one line per engine ("ours..." for ours); None where not measured."""

    name: str
    title: str
    unit: str
    x_label: str
    x: list[int]
    series: dict[str, list[float | None]]


def _colours(labels: list[str]) -> dict[str, str]:
    """Blues for ours and our variants (labels starting with "ours"), other colours for the peers."""
    ours = [label for label in labels if label.startswith("ours")]
    peers = [label for label in labels if not label.startswith("ours")]
    return {
        **{label: OURS_COLOURS[min(i, len(OURS_COLOURS) - 1)] for i, label in enumerate(ours)},
        **{label: PEER_COLOURS[i % len(PEER_COLOURS)] for i, label in enumerate(peers)},
    }


def _engines(groups: dict[str, dict[str, float]]) -> list[str]:
    """Every engine of the groups, in order of first appearance (ours first)."""
    return list(dict.fromkeys(engine for group in groups.values() for engine in group))


def draw(charts: list[Bars | Curves], directory: Path = CHARTS) -> list[Path]:
    """Write each chart as `directory/<name>.svg`; answer the paths written."""
    if not charts:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"svg.hashsalt": "factorize-bench", "font.size": 10})
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts:
        figure, axes = plt.subplots(figsize=(7, 3.6))
        if isinstance(chart, Bars):
            _bars(axes, chart)
        else:
            _curves(axes, chart)
        axes.set_title(chart.title, fontsize=11)
        axes.set_ylabel(chart.unit)
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(axis="y", alpha=0.3)
        axes.set_axisbelow(True)
        figure.tight_layout()
        path = directory / f"{chart.name}.svg"
        figure.savefig(path, format="svg", metadata={"Date": None})
        plt.close(figure)
        written.append(path)
    return written


def _bars(axes, chart: Bars) -> None:
    engines = _engines(chart.groups)
    colours = _colours(engines)
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        offset = (i - (len(engines) - 1) / 2) * width
        xs = [g + offset for g, group in enumerate(chart.groups.values()) if engine in group]
        values = [group[engine] for group in chart.groups.values() if engine in group]
        bars = axes.bar(xs, values, width * 0.95, label=engine, color=colours[engine])
        axes.bar_label(bars, labels=[f"{value:,.0f}" if value >= 10 else f"{value:.2g}" for value in values],
                       fontsize=7, padding=2)  # fmt: skip
    axes.set_xticks(range(len(chart.groups)), list(chart.groups))
    axes.legend(fontsize=8, frameon=False)


def _curves(axes, chart: Curves) -> None:
    colours = _colours(list(chart.series))
    for engine, values in chart.series.items():
        points = [(x, y) for x, y in zip(chart.x, values, strict=True) if y is not None]
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=engine, color=colours[engine])
    axes.set_xticks(chart.x, [str(x) for x in chart.x])
    axes.set_xlabel(chart.x_label)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8, frameon=False)
