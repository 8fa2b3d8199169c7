"""One environment setting's declaration, its section, and the reader `project/settings.py` uses."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from project.environment.kinds import Kind


@dataclass(frozen=True)
class Setting:
    """`default` is the text used when the variable is unset, parsed like any value, so that the
    reference and `.env.example` show exactly it; None: unset reads as None, and the reader
    computes the default, as `default_text` tells the reference. A `secret` value never appears in
    an error. `env_file=False`: set by the compose file or the image, or meaningful only outside
    Docker, so `.env.example` shows it commented out."""

    name: str
    kind: Kind
    default: str | None
    help: str
    default_text: str = ""
    secret: bool = False
    env_file: bool = True

    def read(self, environ: Mapping[str, str]) -> Any:
        raw = environ.get(self.name)
        if raw is None or (self.kind.empty_is_unset and not raw.strip()):
            raw = self.default
        if raw is None:
            return None
        try:
            return self.kind.parse(raw)
        except ValueError as exc:
            shown = "" if self.secret else f", got {raw!r}"
            detail = str(exc) if ", got " in str(exc) else f"{exc}{shown}"
            raise ImproperlyConfigured(f"{self.name} {detail}.") from None


@dataclass(frozen=True)
class Section:
    """Settings read by one program (`read_by`), under one heading of the reference."""

    title: str
    read_by: str
    intro: str
    settings: tuple[Setting, ...]


# Who reads a section's settings (the reference says so; tests/test_docker_files.py checks that
# docker-compose.yml passes every one the service reads).
DJANGO = "project/settings.py"
SERVER = "scripts/serve.sh"
COMPOSE = "docker-compose.yml"


class Environment:
    """The declared settings' values, as attributes (DRF's `api_settings` in spirit): `env.JOB_TTL`
    parses $JOB_TTL as the table declares, and a name the table lacks is an AttributeError, so
    nothing reads an undeclared variable through it."""

    def __init__(self, settings: Mapping[str, Setting], environ: Mapping[str, str] = os.environ):
        self._settings = settings
        self._environ = environ

    def __getattr__(self, name: str) -> Any:
        try:
            setting = self._settings[name]
        except KeyError:
            raise AttributeError(f"{name} is not declared in project/environment/") from None
        return setting.read(self._environ)
