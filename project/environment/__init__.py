"""Every environment setting, declared once: name, kind, default, help, in sections by who reads
them. `project/settings.py` reads its own through `env`; the configuration reference
(docs/configuration.md) and `.env.example` are generated from the same table
(`python -m project.environment.reference`, `make settings-reference`)."""

from project.environment import deployment, service, storage, workers
from project.environment.setting import COMPOSE, DJANGO, SERVER, Environment, Section, Setting

SECTIONS: tuple[Section, ...] = (*service.SECTIONS, *workers.SECTIONS, *storage.SECTIONS, *deployment.SECTIONS)
SETTINGS: dict[str, Setting] = {setting.name: setting for section in SECTIONS for setting in section.settings}
assert len(SETTINGS) == sum(len(section.settings) for section in SECTIONS), "a setting declared twice"

env = Environment(SETTINGS)


def names_read_by(reader: str) -> set[str]:
    """The settings of the sections `reader` reads (DJANGO, SERVER, COMPOSE...)."""
    return {setting.name for section in SECTIONS if section.read_by == reader for setting in section.settings}


__all__ = ["COMPOSE", "DJANGO", "SECTIONS", "SERVER", "SETTINGS", "Section", "Setting", "env", "names_read_by"]
