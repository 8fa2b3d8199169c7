"""The front page: `/` says what the service serves, to a person; API clients keep the JSON index.

DRF's content negotiation picks the answer: a browser (`Accept: text/html`) gets the page, a
client asking for JSON (or anything, `*/*`, as curl and requests do) gets the router's index,
`{"<path>": "<url>", ...}`, as before. Everything on the page derives from the task type
registry and the API schema's settings; nothing about a model is written here.

The page also shows the service live: per task type, small charts of its queued and running jobs,
its workers and the jobs it ends per second over the last minutes, drawn as SVG by a small script
(static/factorize_app/live.js) from what /queues and /metrics answer, every few seconds.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from django.conf import settings
from rest_framework.renderers import JSONRenderer, TemplateHTMLRenderer
from rest_framework.response import Response
from rest_framework.routers import APIRootView

from factorize_app.tasks import TaskType, task_types

# How often the live charts ask /queues and /metrics, and how far back they reach.
LIVE_POLL_SECONDS = 2
LIVE_WINDOW_SECONDS = 300
# The charts of each type: a field of /queues and its heading; `throughput` is the jobs it ended per
# second, from the job duration histogram's counts in /metrics (which only grow, unlike /queues'
# finished and failed counts, which fall as results expire).
LIVE_SERIES = (("queued", "Queued"), ("started", "Running"), ("workers", "Workers"), ("throughput", "Jobs/s"))


class FrontPageRenderer(TemplateHTMLRenderer):
    template_name = "factorize_app/front_page.html"


@dataclass(frozen=True)
class TypeEntry:
    """One task type as the page shows it."""

    name: str
    description: str
    path: str
    input_fields: list[str]
    examples: tuple[str, ...]  # each example input as JSON
    curl: str


def type_entry(task_type: TaskType, *, base_url: str, with_key: bool) -> TypeEntry:
    examples = tuple(json.dumps(example, separators=(", ", ": ")) for example in task_type.examples)
    command = ["curl", "-X", "POST", f"{base_url}/{task_type.path}", "-H", "Content-Type: application/json"]
    line = shlex.join(command)
    if with_key:  # left for the shell to expand
        line += ' -H "Authorization: Bearer $FACTORIZE_TOKEN"'
    if examples:
        line += f" -d {shlex.quote(examples[0])}"
    return TypeEntry(task_type.name, task_type.description, task_type.path, task_type.input_fields, examples, line)


class FrontPageView(APIRootView):
    """The API root: the JSON index of the task types and /queues, or the front page for a browser."""

    renderer_classes = [JSONRenderer, FrontPageRenderer]

    def _wants_page(self) -> bool:
        return isinstance(getattr(self.request, "accepted_renderer", None), FrontPageRenderer)

    def get_permissions(self):
        # The page only says what the service serves, as the API docs do: open to anyone, even with
        # REQUIRE_API_KEY (a key presented is still checked). The JSON index is an API request.
        return [] if self._wants_page() else super().get_permissions()

    def get(self, request, *args, **kwargs):
        if not self._wants_page():
            return super().get(request, *args, **kwargs)
        base_url = request.build_absolute_uri("/").rstrip("/")
        with_key = settings.REQUIRE_API_KEY
        context = {
            "title": settings.SPECTACULAR_SETTINGS["TITLE"],
            "description": settings.SPECTACULAR_SETTINGS["DESCRIPTION"],
            "task_types": [type_entry(t, base_url=base_url, with_key=with_key) for t in task_types()],
            "require_api_key": with_key,
            "live_poll_ms": LIVE_POLL_SECONDS * 1000,
            "live_samples": LIVE_WINDOW_SECONDS // LIVE_POLL_SECONDS,
            "live_minutes": LIVE_WINDOW_SECONDS // 60,
            "live_series": LIVE_SERIES,
        }
        return Response(context)

    def handle_exception(self, exc):
        # Errors stay JSON, as everywhere else in the API (a bad key shown to a browser included).
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)
