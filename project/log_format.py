"""One log format for every line a process writes: ours, RQ's, Django's and the web servers'.

`logging_config()` is the one logging configuration: Django's LOGGING (project/settings.py),
granian's --log-config (scripts/web-preflight.py writes it for scripts/serve.sh) and gunicorn's
logconfig_dict (project/gunicorn_conf.py) are all built by it, so a container's lines are all
JSON objects (LOG_FORMAT=json, the default, for log shippers) or all text (LOG_FORMAT=text).

This module imports nothing of Django: granian's master process configures logging with it
before any application code loads.
"""

from __future__ import annotations

import json
import logging
import re

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

LOG_FORMATS = ("json", "text")

# Lines that libraries log at INFO or WARNING although nothing needs doing: logger name ->
# fragments of the message (its format string). They are logged at DEBUG instead.
ROUTINE_MESSAGES = {
    # Every idle RQ worker, every maintenance interval (10 s), three lines each time.
    "rq.worker": (
        "cleaning registries for queue",
        "cleaning group registries",
        "subscribing to channel",
        "unsubscribing from channel",
    ),
    # granian warns at every start when a process may run more threads than 2 x cores + 1. Many
    # threads are deliberate here: a long poll holds one while it waits in Redis (WEB_THREADS).
    "_granian": ("seems quite high compared to the number of CPU cores",),
}


def _extras(record: logging.LogRecord) -> dict:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's extra fields, for log shippers to parse."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value...`: the same fields as the JSON lines, for reading by eye."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        if not extras:
            return line
        head, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{head} {extras}{newline}{rest}"


class RoutineMessages(logging.Filter):
    """Demote ROUTINE_MESSAGES to DEBUG, and drop them unless the log level shows DEBUG.

    A filter rather than a logger level: RQ's worker sets its logger's level itself at start."""

    def __init__(self, level: str = "INFO") -> None:
        super().__init__()
        self.threshold = logging.getLevelName(level.upper())
        if not isinstance(self.threshold, int):
            raise ValueError(f"LOG_LEVEL must be a logging level name, got {level!r}")

    def filter(self, record: logging.LogRecord) -> bool:
        fragments = ROUTINE_MESSAGES.get(record.name)
        if fragments and record.levelno > logging.DEBUG and any(f in str(record.msg) for f in fragments):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return record.levelno >= self.threshold
        return True


# Secrets a line may carry: a query parameter whose name says key, token, secret, password or
# signature (`?key=fzk_...`, `&api_key=...`, `access_token=...`), and an API key anywhere (its
# public prefix is kept, to tell keys apart). The key form is project/models.py's KEY_PATTERN.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>(?:^|[?&;])[^=&;?\s'\"]*(?:key|token|secret|password|passwd|signature|credential)[^=&;?\s'\"]*=)"
    r"[^&;\s'\"<>]*",
    re.IGNORECASE,
)
_API_KEY = re.compile(r"\b(fzk_[0-9a-f]{8}_)[A-Za-z0-9_-]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with secret query parameters' values and API keys' secrets replaced by REDACTED."""
    if "=" not in text and "fzk_" not in text:
        return text
    return _API_KEY.sub(rf"\g<1>{REDACTED}", _SECRET_PARAMETER.sub(rf"\g<name>{REDACTED}", text))


class RedactSecrets(logging.Filter):
    """Redact secrets (REDACTED) from a record's message, arguments and extra fields before any
    handler writes it: Django's `django.request` warning carries the request (its repr is the
    path with its query string), and the web servers' access lines the query string. A client
    that sends its key in the URL is refused, but must not leave the key in the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {name: _redacted(value) for name, value in record.args.items()}
        for name, value in _extras(record).items():
            if not isinstance(value, (int, float, bool, type(None))):
                text = str(value)
                if redact(text) != text:
                    setattr(record, name, redact(text))
        return True


def _redacted(value):
    """A log argument, redacted if its text carries a secret (as text then: its repr is what is logged)."""
    if isinstance(value, (int, float, bool, type(None))):
        return value
    text = str(value)
    redacted = redact(text)
    return value if redacted == text else redacted


def logging_config(log_format: str = "json", level: str = "INFO", *, access_log: bool = True) -> dict:
    """A logging.config.dictConfig dict: one handler (stderr) with one formatter for every logger.

    `access_log`: whether the web servers' per-request loggers may write (ACCESS_LOG)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be json or text, got {log_format!r}")
    level = level.upper()
    RoutineMessages(level)  # a bad level fails here, with its name
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    access_level = "INFO" if access_log else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{__name__}.{formatter.__name__}"}},
        "filters": {
            "routine": {"()": f"{__name__}.RoutineMessages", "level": level},
            "redact": {"()": f"{__name__}.RedactSecrets"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["routine", "redact"],
                "level": level,
            }
        },
        "root": {"handlers": ["console"], "level": level},
        # Every other logger propagates to the root's one handler: the libraries' own handlers
        # are removed (Django's DEBUG-only console and mail to ADMINS, granian's and gunicorn's
        # consoles; gunicorn also turns propagation off), and RQ adds handlers of its own only to
        # a logger that has none up its hierarchy.
        "loggers": {
            # The loggers that print request lines redact at the source too, so that no handler
            # added later (a test's, an error tracker's) sees a secret.
            name: {"handlers": [], "level": logger_level, "propagate": True, "filters": ["redact"]}
            for name, logger_level in {
                "django": level,
                "django.request": level,
                "django.server": level,
                "factorize_app": level,
                "rq": level,
                "_granian": level,
                "granian.access": access_level,
                "gunicorn.error": level,
                "gunicorn.access": access_level,
            }.items()
        },
    }

