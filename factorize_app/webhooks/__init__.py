"""Completion webhooks, the outbound HTTP side: which URLs may be called (`urls`), the Standard
Webhooks signature (`signing`), one delivery attempt (`delivery`) and the webhooks worker with
its dispatcher (`worker`). The Redis side (subscriptions, delivery records) is jobs.webhooks."""
