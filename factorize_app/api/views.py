"""Thin DRF views: validate input, call one job-service function, shape the answer."""

from __future__ import annotations

from django.conf import settings
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from factorize_app import jobs
from factorize_app.api.clients import client_name
from factorize_app.api.deadline import requested_cancel_after
from factorize_app.api.prefer import preference_applied, requested_wait
from factorize_app.api.responses import (
    batch_item_body,
    invalid_item_body,
    status_body,
    status_response,
    sync_response,
)
from factorize_app.api.schema import job_view_schema, queue_view_schema, task_view_schema
from factorize_app.api.serializers import batch_serializer
from factorize_app.api.streams import JOB_RENDERERS, open_stream, wants_stream
from factorize_app.api.throttling import ClientRateThrottle
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
        return batch_serializer(self.task_type) if self.action == "batch" else self.task_type.input_serializer

    def list(self, request):
        """What this endpoint computes, and its current load."""
        load = None if settings.EXECUTION_MODE == "sync" else jobs.load(task_type=self.task_type)
        return Response({"name": self.task_type.name, "description": self.task_type.description, "load": load})

    def create(self, request):
        data = self.task_type.validate(request.data)  # as the lean lane and each batch item
        if settings.EXECUTION_MODE == "sync":
            return sync_response(self.task_type, self.perform_compute(data))
        wait = requested_wait(request)
        return status_response(self.task_type, self.perform_submit(data, wait), wait)

    @action(detail=False, methods=["post"])
    def batch(self, request):
        """Submit-or-poll many inputs at once; one status per item, in order."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        valid, errors = {}, {}
        for index, item in enumerate(serializer.validated_data["items"]):
            try:
                valid[index] = self.task_type.validate(item)
            except ValidationError as exc:
                errors[index] = exc.detail
        if settings.EXECUTION_MODE == "sync":
            states = [self.perform_compute(data) for data in valid.values()]
            wait = None
        else:
            wait = requested_wait(request)
            states = self.perform_submit_many(list(valid.values()), wait) if valid else []
        answers = dict(zip(valid, states, strict=True))
        results = [
            batch_item_body(self.task_type, answers[index]) if index in answers else invalid_item_body(errors[index])
            for index in range(len(serializer.validated_data["items"]))
        ]
        return Response({"results": results}, headers=preference_applied(wait))

    def perform_submit(self, data: dict, wait: int | None) -> jobs.JobState:
        client, cancel_after = client_name(self.request.META), requested_cancel_after(self.request)
        return jobs.submit(
            task_type=self.task_type, data=dict(data), wait=wait or 0, client=client, cancel_after=cancel_after
        )

    def perform_submit_many(self, items: list[dict], wait: int | None) -> list[jobs.JobState]:
        client, cancel_after = client_name(self.request.META), requested_cancel_after(self.request)
        return jobs.submit_many(
            task_type=self.task_type, items=items, wait=wait or 0, client=client, cancel_after=cancel_after
        )

    def perform_compute(self, data: dict) -> jobs.JobState:
        return jobs.compute(task_type=self.task_type, data=dict(data))


@job_view_schema()
class JobViewSet(viewsets.ViewSet):
    """A job by the id its submit answered: poll it (GET) or cancel it while queued (DELETE)."""

    lookup_value_regex = r"[A-Za-z0-9_-]+"
    throttle_classes = [ClientRateThrottle]
    renderer_classes = JOB_RENDERERS  # and text/event-stream: GET streams the job's changes

    def retrieve(self, request, pk: str):
        if wants_stream(request):
            return open_stream(request, pk)
        wait = requested_wait(request)
        state = jobs.get_status(job_id=pk, wait=wait or 0)
        return status_response(get_task_type(state.task_name), state, wait)

    def destroy(self, request, pk: str):
        """Cancel a queued job (204) or ask a running one to stop (202, its status: it ends
        `canceled` within a second); 409 for a job already done."""
        state = jobs.cancel(job_id=pk)
        if state.status == jobs.CANCELED:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(status_body(get_task_type(state.task_name), state), status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def retry(self, request, pk: str):
        """Queue a failed, canceled or aborted job again under the same id; 409 for any other."""
        state = jobs.retry(job_id=pk, client=client_name(request.META))
        return status_response(get_task_type(state.task_name), state, None)


@queue_view_schema()
class QueueViewSet(viewsets.ViewSet):
    """Every task type's queue: queued, started, finished and failed jobs, and live workers."""

    throttle_classes = [ClientRateThrottle]

    def list(self, request):
        return Response(jobs.queue_stats())
