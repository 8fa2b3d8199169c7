"""The environment settings' table (project/environment/): the one place each setting is declared.
settings.py reads nothing else, the reference and .env.example are generated from it, and the
defaults the Compose files and start scripts repeat (they cannot import Python) agree with it."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.environment import COMPOSE, DJANGO, SECTIONS, SERVER, SETTINGS, names_read_by, reference
from tests.conftest import ROOT

# Run before project.settings is imported: os.environ replaced by a mapping that notes every name
# asked for, however it is asked (os.environ[...], .get, `in`, os.getenv).
RECORD_READS = textwrap.dedent(
    """
    import json, os, sys
    from collections.abc import MutableMapping

    class Recorder(MutableMapping):
        def __init__(self, inner):
            self.inner, self.read = inner, set()
        def __getitem__(self, key):
            self.read.add(key)
            return self.inner[key]
        def __contains__(self, key):
            self.read.add(key)
            return key in self.inner
        def __setitem__(self, key, value):
            self.inner[key] = value
        def __delitem__(self, key):
            del self.inner[key]
        def __iter__(self):
            return iter(self.inner)
        def __len__(self):
            return len(self.inner)

    os.environ = Recorder(os.environ)
    sys.path.insert(0, ".")
    import project.settings
    print(json.dumps(sorted(os.environ.read)))
    """
)


# Variables the start scripts use that are not the service's settings.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}  # prometheus_client's own; serve.sh makes one per start


def clean_environment(**values: str) -> dict[str, str]:
    """This process's environment less every declared setting (a developer's own REDIS_URL...)."""
    return {**{k: v for k, v in os.environ.items() if k not in SETTINGS}, **values}


def import_settings(**values: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import project.settings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean_environment(**values),
    )


def test_the_reference_and_env_example_are_generated_from_the_table():
    for path, text in reference.generated_files().items():
        assert path.read_text() == text, f"{path.name} is out of date: run `make settings-reference`"
    assert reference.main(["--check"]) == 0


def test_settings_py_reads_only_what_the_table_declares_and_all_of_it():
    result = subprocess.run(
        [sys.executable, "-c", RECORD_READS], cwd=ROOT, capture_output=True, text=True, env=clean_environment()
    )
    assert result.returncode == 0, result.stderr
    read = set(json.loads(result.stdout))
    assert read - set(SETTINGS) == set(), "read by settings.py but declared nowhere"
    # WEB_THREADS is the web server's (its section), read too for the held requests' defaults.
    assert read == names_read_by(DJANGO) | {"WEB_THREADS"}, "declared for settings.py, which never reads it"
    source = (ROOT / "project" / "settings.py").read_text()
    assert not re.search(r"\bos\b|\benviron\[|getenv", source), "every read goes through the table's `env`"
    assert len(source.splitlines()) < 400


def test_every_setting_is_declared_once_with_help_and_a_default_that_parses():
    names = [setting.name for section in SECTIONS for setting in section.settings]
    assert len(names) == len(set(names))
    for setting in SETTINGS.values():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", setting.name)
        assert setting.help.strip().endswith((".", ")")), setting.name
        if setting.default is None:
            assert setting.default_text, f"{setting.name}: a computed default says what it is"
            assert setting.read({}) is None
        else:
            # The declared default is a valid value, the same as when written out (.env.example).
            assert setting.read({setting.name: setting.default}) == setting.read({}), setting.name


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("JOB_TTL", "soon", "JOB_TTL must be an integer, got 'soon'."),
        ("DEBUG", "maybe", "DEBUG must be a boolean (1/0, true/false), got 'maybe'."),
        ("REDIS_MEMORY_HIGH_WATER", "0", "REDIS_MEMORY_HIGH_WATER must be above 0, got '0'."),
        ("API_KEY_USE_FLUSH_SECONDS", "0", "API_KEY_USE_FLUSH_SECONDS must be 1 or more, got '0'."),
        ("QUEUE_ORDER", "lifo", "QUEUE_ORDER must be fair or fifo, got 'lifo'."),
        ("WEBHOOK_RETRY_DELAYS", "1,soon", "WEBHOOK_RETRY_DELAYS must be comma-separated seconds, e.g. 1,5,30, got"),
        ("REDIS_SENTINELS", "a:1,b", "REDIS_SENTINELS must be a comma-separated list of host:port, got 'b'."),
        ("TRUSTED_PROXIES", "proxy", "TRUSTED_PROXIES must list IP addresses or CIDR networks, got 'proxy'."),
        ("POD_IP", "pod-1", "POD_IP must be an IP address (status.podIP), got 'pod-1'."),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, raw, message):
    with pytest.raises(ImproperlyConfigured) as refused:
        SETTINGS[name].read({name: raw})
    assert str(refused.value).startswith(message)


def test_a_bad_value_refuses_the_start_and_a_secret_is_never_shown():
    result = import_settings(WORKER_HEARTBEAT="5s")
    assert result.returncode != 0
    assert "ImproperlyConfigured: WORKER_HEARTBEAT must be an integer, got '5s'." in result.stderr
    result = import_settings(WEBHOOK_SECRET="whsec_hunter2")
    assert result.returncode != 0 and "WEBHOOK_SECRET must be `whsec_`" in result.stderr
    assert "hunter2" not in result.stderr


def test_empty_numbers_mean_the_default_and_unset_computed_ones_follow_what_they_derive_from():
    assert SETTINGS["JOB_TTL"].read({"JOB_TTL": " "}) == 60
    assert SETTINGS["ALLOWED_HOSTS"].read({"ALLOWED_HOSTS": ""}) == []  # an empty list is a value
    script = "from project import settings as s; print(s.MAX_HELD_REQUESTS, s.EVENT_STREAMS_MAX, s.JOB_TTL)"
    env = clean_environment(WEB_THREADS="100", JOB_TTL="")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["75", "36", "60"], result.stderr


def test_the_compose_files_and_start_scripts_repeat_the_tables_defaults():
    """They cannot import the table: every default they spell out is the declared one, and every
    variable they read is declared (none documented nowhere)."""
    spelled = {}
    for path in ("docker-compose.yml", "deploy/compose/proxy.yml", "scripts/serve.sh"):
        for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*):[-=]([^}]*)\}", (ROOT / path).read_text()):
            if name not in NOT_SETTINGS:
                spelled.setdefault(name, set()).add(default)
    for name, defaults in spelled.items():
        assert name in SETTINGS, f"{name} is read but not declared in project/environment/"
        assert defaults == {SETTINGS[name].default}, f"{name}: {defaults} here, {SETTINGS[name].default!r} declared"
    assert names_read_by(COMPOSE) <= set(spelled)
    # WEB_TIMEOUT is gunicorn's alone: project/gunicorn_conf.py reads it through the table.
    assert names_read_by(SERVER) - {"WEB_TIMEOUT"} <= set(spelled), "serve.sh spells every server default"
