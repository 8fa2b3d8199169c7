"""The HTTP API (Django REST framework) over the job service and the webhooks area; it never
imports a worker. One module per concept:

- `urls`, `views`: the routes and thin viewsets (validate, call one service, answer);
- `serializers`: every serializer (requests, and the response bodies the schema documents);
- `responses`: a job's state as an HTTP answer; `exceptions`: every error as JSON;
- `schema`: the OpenAPI documentation (drf-spectacular);
- `identity/`: who the caller is (API keys, sessions, addresses) and what it may read;
- `request_options`: what a request asks beyond its input (`Prefer: wait` and the held
  requests' bounds, `Cancel-After`); `bodies`: request bodies bounded in size and in memory;
  `parsers`: DRF's parsers, bounded in nesting and taking each form field once;
- `throttling`: per-client request rates; `streams`: `text/event-stream` answers;
- `lean`: the hot JSON paths answered before Django; `shutdown`: draining on a stop signal;
- `front_page`, `health`, `metrics`: the browser's front page, probes and Prometheus.
"""
