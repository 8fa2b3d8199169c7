#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as refused:
        # A refused configuration (e.g. PRODUCTION=1 without a real SECRET_KEY) is the operator's
        # to fix: one line naming what to set, not a traceback repeated by every restart.
        sys.exit(f"error: ImproperlyConfigured: {refused}")


if __name__ == "__main__":
    main()
