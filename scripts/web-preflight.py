"""Run by scripts/serve.sh before it starts the web server, in one short Python process:

- load the settings: a refused configuration (e.g. PRODUCTION=1 without a real SECRET_KEY) ends
  the start here with one line naming what to set, instead of every server process failing
  with a traceback and being respawned in a loop;
- log the insecure-defaults warning, once per server start (not once per server process);
- write the logging configuration of the settings as JSON for granian's --log-config, so that
  granian's own lines come out in the same format as the service's (LOG_FORMAT).

Usage: python scripts/web-preflight.py LOG_CONFIG_PATH
"""

import importlib
import json
import logging.config
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.core.exceptions import ImproperlyConfigured  # noqa: E402


def main(log_config_path: str) -> int:
    try:
        config = importlib.import_module(os.environ.get("DJANGO_SETTINGS_MODULE", "project.settings"))
    except ImproperlyConfigured as refused:
        print(f"error: ImproperlyConfigured: {refused}", file=sys.stderr)
        return 1
    logging.config.dictConfig(config.LOGGING)
    from factorize_app.apps import warn_about_insecure_settings

    warn_about_insecure_settings(config)
    Path(log_config_path).write_text(json.dumps(config.LOGGING))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
