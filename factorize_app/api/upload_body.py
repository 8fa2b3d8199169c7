"""An upload's body, streamed: Django's multipart parser reads it in UPLOAD_CHUNK pieces and
pushes the part `file` into the job service's `files.Upload` (a bounded temporary file, its digest
computed on the way), so no upload is ever whole in memory and none is copied by Django's own
upload handlers (which keep small files in memory and spool others whole to disk). A body that
ends before its Content-Length keeps nothing."""

from __future__ import annotations

from django.conf import settings
from django.http import QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils.datastructures import MultiValueDict
from rest_framework import exceptions

from factorize_app.jobs import files

FIELD = "file"  # the multipart part holding the upload
UPLOAD_CHUNK = 256 * 1024  # bytes the parser reads at once (64 KiB: as fast; 1 MiB: slower)


class UploadCutShort(exceptions.ParseError):
    """The body ended before its declared length: the client went away mid-upload."""


class BodyLeftAlone:
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
        return self  # what the parser lists as the part's file (closed on an error: receive() closes the upload)

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

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._request.read(size)
        except Exception as exc:  # noqa: BLE001 (servers raise their own on a dropped connection)
            raise UploadCutShort("The connection failed while the upload was read; nothing was kept.") from exc
        self.count += len(data)
        return data


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
