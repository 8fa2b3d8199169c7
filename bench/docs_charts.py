"""MkDocs hook (mkdocs.yml `hooks`): the benchmark's charts, written by `make bench` beside
bench/RESULTS.md (bench/charts/*.svg), join the site as bench/<name>.svg, so that
docs/performance.md shows the latest ones with no copy kept in docs/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

CHARTS = Path(__file__).resolve().parent / "charts"


def on_files(files: Files, config) -> Files:
    for chart in sorted(CHARTS.glob("*.svg")):
        files.append(File.generated(config, f"bench/{chart.name}", abs_src_path=str(chart)))
    return files
