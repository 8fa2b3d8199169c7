"""Thin DRF views: validate input, call one job-service function, shape the answer."""

from __future__ import annotations

import dataclasses

from django.conf import settings
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from factorize_app import jobs
from factorize_app.api.access import add_traceback, limits_of, reading_owner
from factorize_app.api.authentication import client_identity
from factorize_app.api.deadline import requested_cancel_after
from factorize_app.api.holds import holding
from factorize_app.api.prefer import preference_applied, requested_wait
from factorize_app.api.responses import (
    batch_item_body,
    invalid_item_body,
    status_body,
    status_response,
    sync_response,
)
from factorize_app.api.schema import job_view_schema, queue_view_schema, task_view_schema
from factorize_app.api.serializers import batch_serializer, form_input, form_serializer
from factorize_app.api.streams import JOB_RENDERERS, errors_as_json, open_stream, wants_stream
from factorize_app.api.throttling import SUBMIT, ClientRateThrottle, rate_limit
from factorize_app.api.webhooks import subscribe, take_webhook, webhooks_body
from factorize_app.tasks import TaskType, get_task_type


class TaskViewSet(viewsets.GenericViewSet):
    """Submit-or-poll for one task type: POST the same input again to poll it."""

    task_type: TaskType
    throttle_classes = [ClientRateThrottle]

    @classmethod
    def for_type(cls, task_type: TaskType) -> type[TaskViewSet]:
        viewset = type(
            f"{task_type.class_prefix}ViewSet",
            (cls,),
            {"task_type": task_type, "serializer_class": task_type.input_serializer, "__doc__": task_type.description},
        )
        return task_view_schema(task_type)(viewset)

    def get_serializer_class(self):
        # The input's own serializer validates (TaskType.validate); this one shows the HTML form.
        return batch_serializer(self.task_type) if self.action == "batch" else form_serializer(self.task_type)

    def list(self, request):
        """What this endpoint computes, and its current load."""
        load = None if settings.EXECUTION_MODE == "sync" else jobs.load(task_type=self.task_type)
        return Response({"name": self.task_type.name, "description": self.task_type.description, "load": load})

    def create(self, request):
        # The webhook fields are not part of the input: the job id ignores them.
        body, webhook = take_webhook(form_input(self.task_type, request.data))
        data = self.task_type.validate(body)  # as the lean lane and each batch item
        if settings.EXECUTION_MODE == "sync":
            return sync_response(self.task_type, self.perform_compute(data))
        with holding(client_identity(request).name, requested_wait(request)) as wait:
            state = self.perform_submit(data, wait)
        if webhook is not None:
            subscribe(self.task_type, state, webhook, owner=client_identity(request).name)
        return status_response(self.task_type, state, wait)

    @action(detail=False, methods=["post"])
    def batch(self, request):
        """Submit-or-poll many inputs at once; one status per item, in order."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        valid, errors, webhooks = {}, {}, {}
        for index, item in enumerate(serializer.validated_data["items"]):
            try:
                body, webhooks[index] = take_webhook(item)
                valid[index] = self.task_type.validate(body)
            except ValidationError as exc:
                errors[index] = exc.detail
        if settings.EXECUTION_MODE == "sync":
            states = [self.perform_compute(data) for data in valid.values()]
            wait = None
        else:
            with holding(client_identity(request).name, requested_wait(request)) as wait:
                states = self.perform_submit_many(list(valid.values()), wait, len(serializer.validated_data["items"]))
        answers = dict(zip(valid, states, strict=True))
        for index, state in answers.items():
            if webhooks.get(index) is not None and state.job_id:
                subscribe(self.task_type, state, webhooks[index], owner=client_identity(request).name)
        results = [
            batch_item_body(self.task_type, answers[index]) if index in answers else invalid_item_body(errors[index])
            for index in range(len(serializer.validated_data["items"]))
        ]
        return Response({"results": results}, headers=preference_applied(wait))

    def perform_submit(self, data: dict, wait: int | None) -> jobs.JobState:
        identity = client_identity(self.request)
        return jobs.submit(
            task_type=self.task_type,
            data=dict(data),
            wait=wait or 0,
            client=identity.name,
            cancel_after=requested_cancel_after(self.request),
            limits=limits_of(identity),
        )

    def perform_submit_many(self, items: list[dict], wait: int | None, sent: int) -> list[jobs.JobState]:
        """`sent` items (valid or not) count one by one against the submit allowance; DRF's
        throttle counted the first, the rest count in the submit's own round trip."""
        identity = client_identity(self.request)
        allowance = rate_limit(SUBMIT, self.request.META, client=identity.name)
        allowance = dataclasses.replace(allowance, cost=sent - 1) if allowance is not None and sent > 1 else None
        if not items:
            if allowance is not None:
                jobs.count_request(rate_limit=allowance)
            return []
        return jobs.submit_many(
            task_type=self.task_type,
            items=items,
            wait=wait or 0,
            client=identity.name,
            rate_limit=allowance,
            cancel_after=requested_cancel_after(self.request),
            limits=limits_of(identity),
        )

    def perform_compute(self, data: dict) -> jobs.JobState:
        return jobs.compute(task_type=self.task_type, data=dict(data))


@job_view_schema()
class JobViewSet(viewsets.ViewSet):
    """A job by the id its submit answered: poll it (GET) or cancel it while queued (DELETE)."""

    lookup_value_regex = r"[A-Za-z0-9_-]+"
    throttle_classes = [ClientRateThrottle]
    renderer_classes = JOB_RENDERERS  # and text/event-stream: GET streams the job's changes

    def handle_exception(self, exc):
        errors_as_json(self.request)
        return super().handle_exception(exc)

    def retrieve(self, request, pk: str):
        identity = client_identity(request)
        if wants_stream(request):
            return open_stream(request, pk, client=identity.name, owner=reading_owner(identity))
        with holding(identity.name, requested_wait(request)) as wait:
            state = jobs.get_status(job_id=pk, wait=wait or 0, owner=reading_owner(identity))
        response = status_response(get_task_type(state.task_name), state, wait)
        add_traceback(response.data, state, identity)
        return response

    def destroy(self, request, pk: str):
        """Cancel a queued job (204) or ask a running one to stop (202, its status: it ends
        `canceled` within a second), for one of its owners: while other owners still want it,
        only this one's interest is withdrawn (204). 409 for a job already done; 404 for a job
        the client does not own."""
        identity = client_identity(request)
        state = jobs.cancel(job_id=pk, client=identity.name, staff=identity.staff)
        if state is None or state.status == jobs.CANCELED:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(status_body(get_task_type(state.task_name), state), status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk: str):
        """Queue a failed, canceled or aborted job again under the same id; 409 for any other."""
        identity = client_identity(request)
        state = jobs.retry(job_id=pk, client=identity.name, staff=identity.staff, limits=limits_of(identity))
        return status_response(get_task_type(state.task_name), state, None)

    @action(detail=True, methods=["get"])
    def webhooks(self, request, pk: str):
        """The delivery state of the job's webhook subscriptions: the caller's own (a staff user's: all)."""
        identity = client_identity(request)
        jobs.get_status(job_id=pk, owner=reading_owner(identity))  # 404 for no such job (or not the key's)
        owner = None if identity.staff else identity.name
        return Response(webhooks_body(job_id=pk, owner=owner))


@queue_view_schema()
class QueueViewSet(viewsets.ViewSet):
    """Every task type's queue: queued, started, finished and failed jobs, and live workers."""

    throttle_classes = [ClientRateThrottle]

    def list(self, request):
        return Response(jobs.queue_stats())

