"""The documentation: README.md is the short front door, docs/ a MkDocs site that builds strictly."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
MKDOCS = [str(Path(sys.executable).with_name("mkdocs"))]


def test_the_readme_is_the_short_front_door():
    assert len(README.splitlines()) < 200
    # CI and the hooks look for the two commands; the five steps of adding a model are there too.
    for command in ("make run", "make test", "manage.py startmodel", "make test-model MODEL=", "make deploy-files"):
        assert command in README, command


def test_the_site_builds_strictly(tmp_path):
    """Broken links and anchors, and pages left out of the nav, are warnings that --strict fails on."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [*MKDOCS, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert (site / "index.html").is_file() and (site / "adding-a-model" / "index.html").is_file()


def test_every_page_is_in_the_nav_and_every_readme_link_resolves():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}
    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).is_file(), target


def test_the_docs_show_what_other_tests_check():
    """Facts other tests hold the service to, where a reader of the docs finds them."""
    docs = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    # tests/test_webhooks.py verifies signatures with the receiver the API page shows.
    assert "hmac.new(key, signed, hashlib.sha256)" in docs["api.md"]
    # tests/test_docker_files.py checks the documented Redis maxmemory default.
    assert "| `REDIS_MAXMEMORY` | `256mb` |" in docs["deployment.md"]
