"""Files over HTTP: `POST /files` takes one upload (multipart/form-data, its part `file`) and
streams it to the file storage; `GET /files/<id>` streams it back to whoever may read it.

The upload's body is streamed (api/upload_body.py), never whole in memory. The body limits of
api/bodies.py leave this view alone (`streamed_body`); it checks the declared length itself,
before a byte is read, and charges the client's and the total budgets of live uploads
(jobs/upload_budgets.py) with it. A body that ends before its Content-Length (the client went
away) keeps nothing and is charged nothing. An upload or a download holds its thread as long as
its bytes take: each counts as a request held open (MAX_HELD_PER_CLIENT, MAX_HELD_REQUESTS).

A session's CSRF check reads `request.POST`; here that parses nothing (the token comes from the
X-CSRFToken header), so the body is left for the view.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from django.conf import settings
from django.http import FileResponse, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from factorize_app import jobs
from factorize_app.api.bodies import declared_length
from factorize_app.api.identity.authentication import client_identity
from factorize_app.api.request_options import HELD
from factorize_app.api.schema import VALIDATION_ERROR
from factorize_app.api.serializers import ErrorSerializer
from factorize_app.api.shutdown import draining
from factorize_app.api.throttling import ClientRateThrottle
from factorize_app.api.upload_body import FIELD, BodyLeftAlone, receive
from factorize_app.jobs import files

logger = logging.getLogger("factorize_app.api")

MAX_BYTES_SETTING = "UPLOAD_MAX_BYTES"
MULTIPART_OVERHEAD = 64 * 1024  # the body's framing beside the file: boundaries, part headers
DOWNLOAD_BLOCK = 1024 * 1024  # bytes a download sends at once (Django's default, 4 KiB, is slow)
RETRY_AFTER_STORAGE = "5"
# A download is data, never a page: no script, no plugin, not even in the service's origin.
DOWNLOAD_POLICY = "default-src 'none'; sandbox"


class TooManyHeld(Exception):
    """The client (or this process) holds as many requests open as it may: an upload or a download
    holds its thread for as long as its bytes take, as a long poll does."""

    def __init__(self, *, per_client: bool) -> None:
        super().__init__()
        self.per_client = per_client


def hold(client: str) -> None:
    """Count a request that streams a file as held open (MAX_HELD_PER_CLIENT, MAX_HELD_REQUESTS);
    TooManyHeld beyond. HELD.give_back(client) when its bytes are done."""
    if draining() or not HELD.take(client):
        raise TooManyHeld(per_client=HELD.held(client) >= settings.MAX_HELD_PER_CLIENT)


class _HeldBlob:
    """A stored file being sent: its held request given back when the server closes the response."""

    def __init__(self, blob, client: str) -> None:
        self._blob, self._client, self._open = blob, client, True

    def read(self, size: int = -1) -> bytes:
        return self._blob.read(size)

    def seek(self, *args) -> int:
        return self._blob.seek(*args)

    def tell(self) -> int:
        return self._blob.tell()

    def seekable(self) -> bool:
        return self._blob.seekable()

    def close(self) -> None:
        if self._open:
            self._open = False
            HELD.give_back(self._client)
            self._blob.close()


class StoredFileSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="`file_<32 hex>`: use it (or `url`) in a job's input.")
    url = serializers.URLField(help_text="Where the file is downloaded (by its uploader only).")
    sha256 = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes.")
    content_type = serializers.CharField()
    name = serializers.CharField()
    expires_at = serializers.DateTimeField(help_text="When the upload expires (UPLOAD_TTL after it).")


def stored_body(request, stored: files.StoredFile) -> dict:
    """The answer naming a stored file (the upload's 201)."""
    return {
        "id": stored.id,
        "url": request.build_absolute_uri(reverse("file-detail", kwargs={"file_id": stored.id})),
        "sha256": stored.sha256,
        "size": stored.size,
        "content_type": stored.content_type,
        "name": stored.name,
        "expires_at": datetime.fromtimestamp(stored.expires_at, UTC).isoformat(timespec="seconds"),
    }


def _too_large(limit: int) -> Response:
    detail = f"The file is too large: at most {limit} bytes ({MAX_BYTES_SETTING}); nothing of it was kept."
    return Response({"detail": detail, "limit": MAX_BYTES_SETTING, "max": limit}, status=413)


class _FileErrors:
    """The file errors of the job service as JSON answers (the rest: api/exceptions.py)."""

    renderer_classes = [JSONRenderer]
    throttle_classes = [ClientRateThrottle]

    def handle_exception(self, exc):
        if isinstance(exc, files.FileTooLarge):
            return _too_large(exc.limit)
        if isinstance(exc, files.FileNotFound):
            return Response({"detail": "No file with this id."}, status=status.HTTP_404_NOT_FOUND)
        if isinstance(exc, files.StorageUnavailable):
            logger.warning("file storage %r unavailable: %s", settings.JOB_FILES_STORAGE, exc)
            body = {
                "detail": "The file storage is unavailable; try again later.",
                "reason": "JOB_FILES_STORAGE",
                "storage": settings.JOB_FILES_STORAGE,
            }
            return Response(body, status=503, headers={"Retry-After": RETRY_AFTER_STORAGE})
        if isinstance(exc, jobs.FileStorageFull):
            body = {"detail": str(exc), "limit": exc.limit, "max": exc.cap, "held": exc.held, "needed": exc.needed}
            return Response(body, status=507, headers={"Retry-After": str(exc.retry_after)})
        if isinstance(exc, TooManyHeld):
            limit = "MAX_HELD_PER_CLIENT" if exc.per_client else "MAX_HELD_REQUESTS"
            detail = (
                f"Too many requests held open at once ({limit}: uploads, downloads, long polls and event "
                "streams); retry when one of them is done."
            )
            return Response({"detail": detail, "limit": limit}, status=429 if exc.per_client else 503,
                            headers={"Retry-After": "1"})  # fmt: skip
        if isinstance(exc, MultiPartParserError):
            return Response({"detail": f"Malformed multipart/form-data body: {exc}"}, status=400)
        return super().handle_exception(exc)


ERROR = ErrorSerializer
UPLOAD_BODY = {
    "type": "object",
    "properties": {FIELD: {"type": "string", "format": "binary", "description": "The file, with its filename."}},
    "required": [FIELD],
}


class FileUploadView(_FileErrors, APIView):
    """Upload a file, to use in jobs' inputs."""

    def initial(self, request, *args, **kwargs):
        request._request.upload_handlers = [BodyLeftAlone()]  # before a CSRF check may read request.POST
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="file_upload",
        summary="Upload a file",
        description=(
            "One part named `file` (with a filename and a Content-Type) in a multipart/form-data body, "
            "streamed to the file storage. Its `id` or `url` stands for it in a job's input until "
            "`expires_at` (UPLOAD_TTL). At most UPLOAD_MAX_BYTES (413 beyond, naming it); a client's live "
            "uploads at most UPLOAD_CLIENT_BYTES (429), everyone's UPLOAD_TOTAL_BYTES (507). A PNG, JPEG, GIF, "
            "WebP, BMP, TIFF, PDF, ZIP or gzip file must start as its type does (400 otherwise)."
        ),
        request={"multipart/form-data": UPLOAD_BODY},
        responses={
            201: OpenApiResponse(StoredFileSerializer, description="Stored; `Location` is its `url`."),
            400: OpenApiResponse(
                VALIDATION_ERROR.response,
                description="No `file` part, another part, a bad Content-Type, bytes not of the declared type "
                "(each named: `file`...), or the body cut short or malformed (`detail`).",
            ),
            411: OpenApiResponse(ERROR, description="No Content-Length."),
            413: OpenApiResponse(ERROR, description="Larger than UPLOAD_MAX_BYTES (`max`, in bytes)."),
            415: OpenApiResponse(ERROR, description="Not multipart/form-data."),
            429: OpenApiResponse(
                ERROR, description="Too many requests, over UPLOAD_CLIENT_BYTES, or over MAX_HELD_PER_CLIENT."
            ),
            503: OpenApiResponse(
                ERROR, description="The file storage or the job queue is unavailable, or MAX_HELD_REQUESTS reached."
            ),
            507: OpenApiResponse(ERROR, description="All clients' live uploads are at UPLOAD_TOTAL_BYTES."),
        },
    )
    def post(self, request):
        length = declared_length(request.META)
        if length is None:
            return Response({"detail": "Send the upload's Content-Length (no chunked bodies)."}, status=411)
        limit = settings.UPLOAD_MAX_BYTES
        if length > limit + MULTIPART_OVERHEAD:
            return _too_large(limit)
        if not request.content_type.startswith("multipart/form-data"):
            raise exceptions.UnsupportedMediaType(
                request.content_type, detail=f"Send the file as multipart/form-data, in a part named `{FIELD}`."
            )
        owner = client_identity(request).name
        hold(owner)
        try:
            charge = jobs.reserve_upload(client=owner, size=min(length, limit))
            try:
                stored = receive(request, length=length, limit=limit, owner=owner)
            except BaseException:
                with contextlib.suppress(jobs.QueueUnavailable):  # its reservation then expires on its own
                    jobs.release_upload(charge)
                raise
        finally:
            HELD.give_back(owner)
        jobs.settle_upload(charge, size=stored.size, expires_at=stored.expires_at)
        body = stored_body(request, stored)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


FILE_ID = OpenApiParameter(
    "file_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The `id` an upload (or a job's result) named."
)


class FileDownloadView(_FileErrors, APIView):
    """Download a file: an upload (its uploader only) or a job's output (the job's owners)."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)  # any Accept: the bytes are what they are

    @extend_schema(
        operation_id="file_download",
        summary="Download a file",
        description="The bytes, as an attachment with the Content-Type they were stored with. Only for the "
        "client that uploaded the file, or for a job's output the job's owners: anyone else gets 404, as for "
        "an unknown or expired id.",
        parameters=[FILE_ID],
        responses={
            (200, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The file's bytes."),
            404: OpenApiResponse(ERROR, description="No such file, expired, or not this client's."),
            429: OpenApiResponse(ERROR, description="Too many requests (THROTTLE_POLL, MAX_HELD_PER_CLIENT)."),
            503: OpenApiResponse(
                ERROR, description="The file storage or the job queue is unavailable, or MAX_HELD_REQUESTS reached."
            ),
        },
    )
    def get(self, request, file_id: str):
        stored = self.readable(request, file_id)
        client = client_identity(request).name
        blob = files.open_blob(sha256=stored.sha256)
        try:
            hold(client)
        except TooManyHeld:
            blob.close()
            raise
        sent = _HeldBlob(blob, client)  # given back when the server closes the response
        try:
            response = FileResponse(sent, as_attachment=True, filename=stored.name, content_type=stored.content_type)
        except BaseException:
            sent.close()
            raise
        response.block_size = DOWNLOAD_BLOCK
        return self.described(response, stored)

    @extend_schema(exclude=True)
    def head(self, request, file_id: str):
        stored = self.readable(request, file_id)
        files.open_blob(sha256=stored.sha256).close()  # the same 404 or 503 as a GET
        response = HttpResponse(content_type=stored.content_type)
        response["Content-Length"] = str(stored.size)
        response["Content-Disposition"] = content_disposition_header(True, stored.name)
        return self.described(response, stored)

    @staticmethod
    def readable(request, file_id: str) -> files.StoredFile:
        stored = files.lookup(file_id=file_id)
        if not files.readable_by(stored, client=client_identity(request).name):
            raise files.FileNotFound(file_id)
        return stored

    @staticmethod
    def described(response: HttpResponse, stored: files.StoredFile) -> HttpResponse:
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = DOWNLOAD_POLICY
        response["Cache-Control"] = "private"
        return response
