"""Thin DRF views: validate input, call the job service (or the webhooks area), shape the answer.

As DRF's own mixins do, each action validates and answers while a `perform_*` hook does the work:
`TaskViewSet.perform_submit` is the one place where the execution mode is chosen (EXECUTION_MODE:
inputs computed in the request, or queued as jobs)."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from factorize_app import jobs
from factorize_app.api.file_inputs import FileCount, with_stored_files
from factorize_app.api.identity.authentication import client_identity
from factorize_app.api.identity.clients import add_traceback, limits_of, reading_owner
from factorize_app.api.request_options import holding, preference_applied, requested_cancel_after, requested_wait
from factorize_app.api.responses import base_url, invalid_item_body, status_response
from factorize_app.api.schema import job_view_schema, queue_view_schema, task_view_schema
from factorize_app.api.serializers import batch_serializer, form_input, form_serializer, take_webhook
from factorize_app.api.streams import (
    EVENT_STREAM,
    JOB_RENDERERS,
    EventStreamRenderer,
    errors_as_json,
    open_stream,
    wants_stream,
)
from factorize_app.api.throttling import SUBMIT, ClientRateThrottle, rate_limit
from factorize_app.tasks import TaskType, get_task_type
from factorize_app.webhooks import subscriptions


class TaskViewSet(viewsets.GenericViewSet):
    """Submit-or-poll for one task type: POST the same input again to poll it; with `Accept:
    text/event-stream`, submit and stream the job's changes in one request."""

    task_type: TaskType
    throttle_classes = [ClientRateThrottle]

    def perform_content_negotiation(self, request, force=False):
        # A queued submit asking for its job's event stream streams it (not a renderer of the
        # view's: no other action, nor `?format=`, negotiates a stream).
        if self.action == "create" and self.queued and request.META.get("HTTP_ACCEPT", "").strip() == EVENT_STREAM:
            return EventStreamRenderer(), EVENT_STREAM
        return super().perform_content_negotiation(request, force)

    def handle_exception(self, exc):
        errors_as_json(self.request)
        return super().handle_exception(exc)

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
        load = jobs.load(task_type=self.task_type) if self.queued else None
        return Response({"name": self.task_type.name, "description": self.task_type.description, "load": load})

    def create(self, request):
        # The webhook fields are not part of the input: the job id ignores them.
        body, webhook = take_webhook(form_input(self.task_type, request.data))
        streamed = wants_stream(request)
        if streamed and webhook is not None:  # its secret is answered once, in the JSON body
            raise ValidationError({"webhook": ["a webhook's secret is answered as JSON: submit without Accept: "
                                               "text/event-stream, then open the job's stream"]})  # fmt: skip
        data = self.task_type.validate(body)  # as the lean lane and each batch item
        data = with_stored_files(self.task_type, data, request, FileCount())
        if webhook is not None and (refused := self.admit_webhooks({0: (data, webhook)})):
            raise ValidationError({"webhook": [refused[0]]})
        (state,), wait = self.perform_submit([data], sent=1)
        if streamed:  # counted already, as this submit
            identity = client_identity(request)
            return open_stream(request, state.job_id, client=identity.name, owner=reading_owner(identity))
        response = status_response(self.task_type, state, wait, request=request)
        if webhook is not None:
            response.data["webhook_secret"] = self.subscribe(state, webhook)
        return response

    @action(detail=False, methods=["post"])
    def batch(self, request):
        """Submit-or-poll many inputs at once; one status per item, in order."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        items = serializer.validated_data["items"]
        valid, errors, webhooks, files = {}, {}, {}, FileCount()
        for index, item in enumerate(items):
            try:
                body, webhooks[index] = take_webhook(item)
                valid[index] = with_stored_files(self.task_type, self.task_type.validate(body), request, files)
            except ValidationError as exc:
                errors[index] = exc.detail
        # A webhook over a cap makes its item invalid.
        wanted = {index: (data, webhooks[index]) for index, data in valid.items() if webhooks.get(index)}
        for index, reason in self.admit_webhooks(wanted).items():
            errors[index] = {"webhook": [reason]}
            del valid[index]
        states, wait = self.perform_submit(list(valid.values()), sent=len(items))
        answers = dict(zip(valid, states, strict=True))
        secrets = {}
        for index, state in answers.items():
            if webhooks.get(index) is not None and state.job_id:
                try:
                    secrets[index] = self.subscribe(state, webhooks[index])
                except ValidationError as exc:  # a concurrent request took the last room under a cap
                    errors[index] = exc.detail
        base = base_url(request)
        results = [
            jobs.status_body(self.task_type, answers[index], base_url=base) if index in answers and index not in errors
            else invalid_item_body(errors[index])
            for index in range(len(items))
        ]  # fmt: skip
        for index, secret in secrets.items():
            results[index]["webhook_secret"] = secret
        return Response({"results": results}, headers=preference_applied(wait))

    @property
    def queued(self) -> bool:
        """Whether inputs go through the job queue (EXECUTION_MODE=async), or are computed in the
        request (sync: no queue, no Redis, no load, no waits)."""
        return settings.EXECUTION_MODE != "sync"

    def perform_submit(self, items: list[dict], *, sent: int) -> tuple[list[jobs.JobState], int | None]:
        """Run the valid `items` of a request that sent `sent` (valid or not); their states and the
        wait applied. In sync mode each is computed now. Otherwise the job service submits them
        (or polls them), holding up to the request's `Prefer: wait`, and the `sent` items count
        one by one against the submit allowance: DRF's throttle counted the first, the rest
        count in the submit's own round trip."""
        if not self.queued:
            client = client_identity(self.request).name  # owns the files a handler returns
            return [jobs.compute(task_type=self.task_type, data=dict(data), client=client) for data in items], None
        identity = client_identity(self.request)
        allowance = rate_limit(SUBMIT, self.request.META, client=identity.name)
        allowance = dataclasses.replace(allowance, cost=sent - 1) if allowance is not None and sent > 1 else None
        with holding(identity.name, requested_wait(self.request)) as wait:
            if not items:
                if allowance is not None:
                    jobs.count_request(rate_limit=allowance)
                return [], wait
            states = jobs.submit_many(
                task_type=self.task_type,
                items=[dict(data) for data in items],
                wait=wait or 0,
                client=identity.name,
                rate_limit=allowance,
                cancel_after=requested_cancel_after(self.request),
                limits=limits_of(identity),
            )
        return states, wait

    def admit_webhooks(self, wanted: dict[int, tuple[dict, dict[str, Any]]]) -> dict[int, str]:
        """Why each item of `wanted` (index -> its validated input and webhook) may not subscribe:
        over the client's caps per job or live at once, or past Redis's high-water mark. The new
        subscriptions the rest make count as submits against the client's allowance (429 beyond)."""
        if not wanted:
            return {}
        owner = client_identity(self.request).name
        order = list(wanted)
        answers, new = subscriptions.admit(
            owner=owner, wanted=[(jobs.job_id_for(self.task_type, wanted[i][0]), wanted[i][1]["url"]) for i in order]
        )
        allowance = rate_limit(SUBMIT, self.request.META, client=owner)
        if new and allowance is not None:
            jobs.count_request(rate_limit=dataclasses.replace(allowance, cost=new))
        return {index: answer for index, answer in zip(order, answers, strict=True) if answer is not None}

    def subscribe(self, state: jobs.JobState, webhook: dict[str, Any]) -> str:
        """Subscribe after the submit (a job already done gets its `completed` delivery at once); the
        secret that signs this client's deliveries to that receiver. A ValidationError naming
        `webhook` if a concurrent request took the last room under a cap."""
        try:
            return subscriptions.subscribe(
                task_type=self.task_type,
                state=state,
                url=webhook["url"],
                events=list(webhook["events"]),
                owner=client_identity(self.request).name,
            )
        except subscriptions.SubscriptionRefused as exc:
            raise ValidationError({"webhook": [str(exc)]}) from None


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
        response = status_response(get_task_type(state.task_name), state, wait, request=request)
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
        return Response(jobs.status_body(get_task_type(state.task_name), state), status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk: str):
        """Queue a failed, canceled or aborted job again under the same id; 409 for any other."""
        identity = client_identity(request)
        state = jobs.retry(job_id=pk, client=identity.name, staff=identity.staff, limits=limits_of(identity))
        return status_response(get_task_type(state.task_name), state, None, request=request)

    @action(detail=True, methods=["get"])
    def webhooks(self, request, pk: str):
        """The delivery state of the job's webhook subscriptions: the caller's own (a staff user's: all)."""
        identity = client_identity(request)
        jobs.get_status(job_id=pk, owner=reading_owner(identity))  # 404 for no such job (or not the key's)
        owner = None if identity.staff else identity.name
        return Response({"job_id": pk, "subscriptions": subscriptions.subscriptions(job_id=pk, owner=owner)})


@queue_view_schema()
class QueueViewSet(viewsets.ViewSet):
    """Every task type's queue: queued, started, finished and failed jobs, and live workers."""

    throttle_classes = [ClientRateThrottle]

    def list(self, request):
        return Response(jobs.queue_stats())
