"""The settings of uploads (`POST /files`, `GET /files/<id>`): how large, how long, how much disk."""

from project.environment.kinds import INT, at_least
from project.environment.setting import DJANGO, Section, Setting

UPLOADS = Section(
    "Uploads",
    DJANGO,
    "Files clients upload (`POST /files`, streamed to the file storage, never whole in memory) to use "
    "in jobs' inputs ([Files](files.md)). Sizes are in bytes; `0` turns a budget off.",
    (
        Setting("UPLOAD_MAX_BYTES", at_least(INT, 1), "104857600", "The largest upload (100 MiB); a larger one "
                "is answered 413 JSON naming this limit, and nothing of it is kept. Its request body may be "
                "this plus 64 KiB of multipart framing (`MAX_REQUEST_BYTES` does not apply to `/files`)."),
        Setting("UPLOAD_TTL", at_least(INT, 1), "86400", "Seconds an upload lives (its id and URL answer "
                "404 after); a queued job or a kept result that uses it keeps its bytes as long as they need."),
        Setting("UPLOAD_CLIENT_BYTES", at_least(INT, 0), "1073741824", "Per client: bytes of live uploads "
                "(1 GiB); an upload past it is a 429 naming `UPLOAD_CLIENT_BYTES`, with `Retry-After` until the "
                "oldest expire."),
        Setting("UPLOAD_TOTAL_BYTES", at_least(INT, 0), "10737418240", "All clients together: bytes of live "
                "uploads (10 GiB; keep it below the storage's free space); an upload past it is a 507 naming "
                "`UPLOAD_TOTAL_BYTES`, with `Retry-After`."),
    ),
)

SECTIONS = (UPLOADS,)
