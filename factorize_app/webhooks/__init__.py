"""Completion webhooks, in one area over the job service (which it uses by its public names only;
it never imports the API). One module per concept:

- `events`: the webhook events (start, progress, completed), and which job events make one;
- `subscriptions`: who wants which job's events at which URL, under their caps;
- `deliveries`: each delivery's record in Redis, its carrier job, claims and outcomes;
- `dispatcher`: the job events of watched jobs turned into deliveries, by one lease holder;
- `attempts`: the carrier job and the pool of threads that runs attempts (webhooks worker only);
- `sending`: one attempt over HTTP, to the address checked; `signing`: Standard Webhooks;
- `targets`: which URLs may be called (no server-side request forgery);
- `keys`: every Redis key of the area; `worker`: the webhooks worker (`rqworker webhooks`).
"""
