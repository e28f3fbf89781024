"""Reading a posted form: capped in size, urlencoded or multipart, and nothing else.

Browsers post ``application/x-www-form-urlencoded``; RFC 8058's own one-click example (and some
mail providers) post ``multipart/form-data``. Both are read into the same ``{name: [values]}``
shape. Bodies are capped at ``MAX_FORM_BYTES`` before any parsing, multipart files are refused,
and any other content type is a 415, so no handler ever sees an unparsed body.
"""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

MAX_FORM_BYTES = 8192
MAX_FIELDS = 50
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class FormError(Exception):
    """A form that cannot be read; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


TOO_LARGE = "요청이 너무 큽니다."
BAD = "잘못된 요청입니다."


async def read_body(request: Request, limit: int = MAX_FORM_BYTES) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FormError(413, TOO_LARGE)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise FormError(413, TOO_LARGE)
    except ClientDisconnect:  # gone mid-body (or closed for being too slow): nothing to do
        raise FormError(400, BAD) from None
    return bytes(body)


async def read_form(request: Request) -> dict[str, list[str]]:
    """The posted fields: 413 beyond the cap, 415 for a type other than the two form types, 400
    for one that does not parse. An empty body is an empty form."""
    body = await read_body(request)
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind == URLENCODED:
        try:
            return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise FormError(400, BAD) from None
    if kind == MULTIPART:
        return _parse_multipart(content_type, body)
    raise FormError(415, "지원하지 않는 형식입니다.")


def _parse_multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    """RFC 7578 form fields (text only) through the standard library's MIME parser."""
    if "\r" in content_type or "\n" in content_type:
        raise FormError(400, BAD)
    try:
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except (UnicodeEncodeError, ValueError):
        raise FormError(400, BAD) from None
    if not message.is_multipart() or message.get_boundary() is None or message.defects:
        raise FormError(400, BAD)
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        if part.get_content_disposition() != "form-data" or part.get_filename() is not None or part.is_multipart():
            raise FormError(400, BAD)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            raise FormError(400, BAD)
        try:
            value = payload.decode(part.get_content_charset() or "utf-8")
        except (LookupError, UnicodeDecodeError):
            raise FormError(400, BAD) from None
        fields.setdefault(name, []).append(value)
        if sum(len(v) for v in fields.values()) > MAX_FIELDS:
            raise FormError(400, BAD)
    return fields
