"""The benchmark cannot rot unseen: every scenario module imports and renders its section of
bench/RESULTS.md from a recorded result (tests/bench_results.json, from a real `make bench` run at
small sizes) without running, and the chart step writes its files. No timing is asserted."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from bench import report, scenarios
from bench.charts import CHARTS, Bars, Curves, draw
from tests.conftest import ROOT

RECORDED = json.loads((ROOT / "tests" / "bench_results.json").read_text())
SVG = "{http://www.w3.org/2000/svg}svg"


def test_the_recording_holds_every_scenario():
    """Re-record (python -m bench --fraction 0.02 --runs 1 --seconds 2 --output ...) when one is added."""
    assert sorted(RECORDED["scenarios"]) == sorted(scenarios.NAMES)


@pytest.mark.parametrize("name", scenarios.NAMES)
def test_each_scenario_renders_its_section_from_a_recorded_result(name):
    module = scenarios.load(name)
    assert callable(module.run)
    lines = module.report(RECORDED["scenarios"][name])
    assert lines[0].startswith("## ") and lines[-1] == ""
    assert all(isinstance(line, str) for line in lines)
    for chart in getattr(module, "charts", lambda result: [])(RECORDED["scenarios"][name]):
        assert isinstance(chart, Bars | Curves) and re.fullmatch(r"[a-z_]+", chart.name)


def test_results_md_has_every_section_and_shows_the_charts_written_beside_it(tmp_path):
    output = tmp_path / "RESULTS.md"
    written = report.write(RECORDED, output, tmp_path / "charts")
    text = output.read_text()
    assert text.startswith("# Benchmark results\n")
    assert text.count("\n## ") == len(scenarios.NAMES)
    assert {path.name for path in written} == {path.name for path in (tmp_path / "charts").iterdir()}
    for path in written:
        assert f"](charts/{path.name})" in text
    assert {"scaling_workers.svg", "scaling_hot_poll.svg", "redis_cost.svg", "workers.svg"} <= {p.name for p in written}


def test_the_chart_step_draws_bars_and_curves_from_a_small_result_set(tmp_path):
    charts = [
        Bars(
            "engines",
            "Trivial jobs",
            "jobs/s",
            {"1 process": {"ours": 10.0, "peer": 5.0}, "2 processes": {"ours": 20.0}},
        ),
        Curves(
            "curve", "By processes", "req/s", "processes", [1, 2, 4], {"ours": [1.0, 2.0, None], "peer": [1, 1.5, 2]}
        ),
    ]
    written = draw(charts, tmp_path / "a")
    assert [path.name for path in written] == ["engines.svg", "curve.svg"]
    for path in written:
        root = ET.parse(path).getroot()
        assert root.tag == SVG
        assert path.stat().st_size > 5_000  # axes, bars or lines, labels: not an empty canvas
    # The same figures make the same files (no date, a fixed hash salt): commits show real changes only.
    again = draw(charts, tmp_path / "b")
    assert [path.read_bytes() for path in written] == [path.read_bytes() for path in again]


def test_the_performance_page_shows_the_committed_charts():
    page = (ROOT / "docs" / "performance.md").read_text()
    shown = set(re.findall(r"\]\(bench/([a-z_]+\.svg)\)", page))
    assert {"workers.svg", "scaling_workers.svg", "scaling_hot_poll.svg", "redis_cost.svg"} <= shown
    assert shown <= {path.name for path in CHARTS.glob("*.svg")}
