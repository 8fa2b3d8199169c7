"""Files over HTTP: `POST /files` takes one upload (multipart/form-data, its part `file`) and
streams it to the file storage; `GET /files/<id>` streams it back to whoever may read it.

The upload's body never passes through Django's upload handlers, which keep small files in
memory and copy others whole to a temporary file: Django's multipart parser reads it in pieces
(UPLOAD_CHUNK) and pushes each into the job service's `files.Upload`, which writes it to a
temporary file bounded by UPLOAD_MAX_BYTES while computing its digest, then saves it once. The
body limits of api/bodies.py leave this view alone (`streamed_body`); it checks the declared
length itself, before a byte is read, and charges the client's and the total budgets of live
uploads (jobs/upload_budgets.py) with it. A body that ends before its Content-Length (the client
went away) keeps nothing and is charged nothing.

A session's CSRF check reads `request.POST`; here that parses nothing (the token comes from the
X-CSRFToken header), so the body is left for the view.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from django.conf import settings
from django.http import FileResponse, HttpResponse, QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
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
from factorize_app.api.schema import VALIDATION_ERROR
from factorize_app.api.serializers import ErrorSerializer
from factorize_app.api.throttling import ClientRateThrottle
from factorize_app.jobs import files

logger = logging.getLogger("factorize_app.api")

FIELD = "file"  # the multipart part holding the upload
MAX_BYTES_SETTING = "UPLOAD_MAX_BYTES"
MULTIPART_OVERHEAD = 64 * 1024  # the body's framing beside the file: boundaries, part headers
UPLOAD_CHUNK = 256 * 1024  # bytes the parser reads at once
DOWNLOAD_BLOCK = 1024 * 1024  # bytes a download sends at once (Django's default, 4 KiB, is slow)
RETRY_AFTER_STORAGE = "5"
# A download is data, never a page: no script, no plugin, not even in the service's origin.
DOWNLOAD_POLICY = "default-src 'none'; sandbox"


class UploadCutShort(exceptions.ParseError):
    """The body ended before its declared length: the client went away mid-upload."""


class _BodyLeftAlone:
    """Django's own parsing of the body (`request.POST`) gets nothing: the body is the view's."""

    chunk_size = None

    def handle_raw_input(self, *args, **kwargs):
        return QueryDict(), MultiValueDict()


class _IntoUpload:
    """Django's upload handler protocol, pushing the part `file` into a files.Upload."""

    chunk_size = UPLOAD_CHUNK

    def __init__(self, upload: files.Upload) -> None:
        self.upload = upload
        self.name: str | None = None
        self.content_type = ""
        self.complete = self.interrupted = False

    def handle_raw_input(self, *args, **kwargs):
        return None

    def new_file(self, field_name, file_name, content_type, *args, **kwargs) -> None:
        if field_name != FIELD or self.name is not None:
            raise exceptions.ValidationError(
                {field_name: [f"Unexpected file part: send one file, in the part named `{FIELD}`."]}
            )
        content_type = files.clean_content_type(content_type or "")
        if content_type is None:
            raise exceptions.ValidationError({FIELD: ["Its Content-Type is not a valid MIME type (type/subtype)."]})
        self.name, self.content_type = file_name, content_type

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.upload.write(raw_data)

    def file_complete(self, file_size: int) -> _IntoUpload:
        self.complete = True
        return self  # what the parser lists as the part's file (and closes on an error: the view closes the upload)

    def close(self) -> None:
        pass

    def upload_interrupted(self) -> None:
        self.interrupted = True

    def upload_complete(self) -> None:
        return None


class _Counted:
    """The request's body as the parser reads it, counted: a body that stops short is seen."""

    def __init__(self, request) -> None:
        self._request = request
        self.count = 0
        self.failed = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._request.read(size)
        except Exception as exc:  # noqa: BLE001 (servers raise their own on a dropped connection)
            self.failed = True
            raise UploadCutShort("The connection failed while the upload was read; nothing was kept.") from exc
        self.count += len(data)
        return data


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
        request._request.upload_handlers = [_BodyLeftAlone()]  # before a CSRF check may read request.POST
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
            429: OpenApiResponse(ERROR, description="Too many requests, or over UPLOAD_CLIENT_BYTES."),
            503: OpenApiResponse(ERROR, description="The file storage or the job queue is unavailable."),
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
        charge = jobs.reserve_upload(client=owner, size=min(length, limit))
        try:
            stored = self.receive(request, length=length, limit=limit, owner=owner)
        except BaseException:
            with contextlib.suppress(jobs.QueueUnavailable):  # its reservation then expires on its own
                jobs.release_upload(charge)
            raise
        jobs.settle_upload(charge, size=stored.size, expires_at=stored.expires_at)
        body = stored_body(request, stored)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    @staticmethod
    def receive(request, *, length: int, limit: int, owner: str) -> files.StoredFile:
        """Stream the body's part `file` into the storage; nothing is kept unless all of it came."""
        with files.Upload(max_bytes=limit) as upload:
            part, body = _IntoUpload(upload), _Counted(request._request)
            try:
                MultiPartParser(request.META, body, [part]).parse()
            except MultiPartParserError:
                if body.count < length:
                    raise UploadCutShort(_cut_short(body.count, length)) from None
                raise
            if body.count < length or part.interrupted:
                raise UploadCutShort(_cut_short(body.count, length))
            if part.name is None or not part.complete:
                raise exceptions.ValidationError(
                    {FIELD: [f"No file: send it in a part named `{FIELD}`, with a filename (multipart/form-data)."]}
                )
            if not files.matches_content_type(part.content_type, upload.head):
                raise exceptions.ValidationError({FIELD: [f"These bytes are not {part.content_type}, as declared."]})
            return upload.finish(
                content_type=part.content_type, name=files.clean_name(part.name), owner=owner, ttl=settings.UPLOAD_TTL
            )


def _cut_short(received: int, length: int) -> str:
    return f"The upload was cut short: {received} of its {length} bytes (Content-Length) came; nothing was kept."


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
            429: OpenApiResponse(ERROR, description="Too many requests from this client (THROTTLE_POLL)."),
            503: OpenApiResponse(ERROR, description="The file storage or the job queue is unavailable."),
        },
    )
    def get(self, request, file_id: str):
        stored = self.readable(request, file_id)
        response = FileResponse(
            files.open_blob(sha256=stored.sha256),
            as_attachment=True,
            filename=stored.name,
            content_type=stored.content_type,
        )
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
