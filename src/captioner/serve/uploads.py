"""Reading a request's image(s): content types, size limits, multipart forms kept in memory.

Nothing an upload carries is written to disk. Starlette's form parser spools file parts over 1 MB
to temporary files; this module parses `multipart/form-data` itself with python-multipart's
streaming parser and keeps every part in memory, which the size limit bounds (the image has to be
in memory to be decoded anyway). So there are no temporary files to place or clean up.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from captioner.serve.settings import IMAGE_CONTENT_TYPES

RAW_HINT = "send multipart/form-data with an image file field, or the image bytes with Content-Type image/jpeg, image/png, image/bmp or image/webp"


class RequestError(Exception):
    """A request the service refuses with `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


@dataclasses.dataclass
class Part:
    """One part of a multipart form (or the whole body of a raw upload)."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclasses.dataclass
class Upload:
    """What a request carried: its image parts in order, and its plain form fields."""

    files: list[Part]
    fields: dict[str, str]


def media_type(content_type: str | None) -> str:
    """'multipart/form-data; boundary=x' -> 'multipart/form-data' (lower case; '' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes.

    A Content-Length over the limit is refused before anything is read; a body sent without one
    (chunked) or longer than it claims is counted as it streams in, and refused when it passes
    the limit, so at most `limit` bytes are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length is not a number: {declared[:40]!r}") from None
        if length > limit:
            raise RequestError(413, f"upload too large ({length} bytes; limit {limit})")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"upload too large (more than {limit} bytes; limit {limit})")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Splits a multipart/form-data body into its parts, in memory.

    Raises:
        RequestError: 400 for a body that is not valid multipart (no boundary, a part without a
            name, broken framing), 413 for more than `max_parts` parts.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError(400, "invalid multipart body: no boundary in its Content-Type")
    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    field, value, data = bytearray(), bytearray(), bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers[bytes(field).strip().lower()] = bytes(value).strip()
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        if len(parts) >= max_parts:
            raise RequestError(413, f"too many parts in the form (limit {max_parts})")
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name")
        if name is None:
            raise RequestError(400, 'invalid multipart body: a part has no name (Content-Disposition: form-data; name="...")')
        filename = disposition.get(b"filename")
        part_type = headers.get(b"content-type")
        parts.append(
            Part(
                name.decode("utf-8", "replace"),
                None if filename is None else filename.decode("utf-8", "replace"),
                None if part_type is None else part_type.decode("latin-1"),
                bytes(data),
            )
        )

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as err:
        text = str(err).strip().splitlines()
        raise RequestError(400, f"invalid multipart body ({text[0] if text else type(err).__name__})") from None
    return parts


async def read_upload(request: Any, limit: int, file_fields: tuple[str, ...], max_parts: int, allow_raw: bool) -> Upload:
    """Checks the content type (415), reads the body within `limit` (413), and splits it.

    Args:
        file_fields: form field names that carry images (in order of appearance).
        allow_raw: accept the image itself as the body, with an image content type.
    """
    content_type = request.headers.get("content-type")
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        body = await read_body(request, limit)
        # The parser is pure Python: keep it off the event loop, like everything else that is not I/O.
        parts = await asyncio.to_thread(parse_multipart, body, content_type or "", max_parts)
        files = [part for part in parts if part.name in file_fields]
        fields: dict[str, str] = {}
        for part in parts:
            if part.name not in file_fields and part.filename is None:
                fields.setdefault(part.name, part.data[:1000].decode("utf-8", "replace"))
        return Upload(files, fields)
    if allow_raw and kind in IMAGE_CONTENT_TYPES:
        return Upload([Part("image", None, kind, await read_body(request, limit))], {})
    shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
    if kind.startswith("image/"):
        raise RequestError(415, f"unsupported image type {kind!r}: {RAW_HINT}")
    if not allow_raw:
        raise RequestError(415, f"{shown}: send multipart/form-data with one 'images' file field per image")
    raise RequestError(415, f"{shown}: {RAW_HINT}")
