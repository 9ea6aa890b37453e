"""ASGI middleware in front of BentoML's request parsing: one byte cap, and no URL in a file field.

BentoML reads a whole request body before anything of ours sees it: a multipart upload
is spooled to the temp folder in full and a JSON body is held in memory in full, whatever
its size. And a *text* value in a file field of a multipart form is taken as a URL that
BentoML downloads on the server. :class:`RequestGuard` stands before all of that:

- a declared ``Content-Length`` over the cap is answered 413 before one byte is read;
- a body without one (chunked) is counted as it arrives, and refused at the cap;
- a body in BentoML's pickle format is answered 415 before it is read;
- each multipart part header is read as it streams past (python-multipart, the parser
  Starlette itself uses), and a file field sent as text is answered 400; so is a
  urlencoded form that names a file field, and a multipart body without a boundary.

The app only ever sees bodies that passed; what it had read of a refused one is dropped
with the connection.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from python_multipart.multipart import MultipartParser, parse_options_header

#: Content types that BentoML would unpickle: never from a client.
PICKLED = (b"application/vnd.bentoml+pickle",)
Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Refused(Exception):
    """A request the guard answers itself, with its status and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class _FileFieldWatch:
    """Follows a multipart body's part headers as it streams, and refuses a file field sent as text."""

    def __init__(self, boundary: bytes, file_fields: frozenset[str]) -> None:
        self.file_fields = file_fields
        self.problem: str | None = None
        self._field, self._value, self._headers = b"", b"", {}
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._add("_field", data[start:end]),
                "on_header_value": lambda data, start, end: self._add("_value", data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
            },
        )

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name in self.file_fields and b"filename" not in options and self.problem is None:
            self.problem = (
                f"{name}: expected an uploaded file (a multipart part with a filename), got a text "
                "value; bgmfit never downloads URLs named in a request"
            )

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except Exception as exc:  # python-multipart raises its own errors and ValueError alike
            raise Refused(400, f"malformed multipart body ({exc})") from None
        if self.problem:
            raise Refused(400, self.problem)


class RequestGuard:
    """ASGI middleware: every request body is at most ``max_bytes``, counted as it arrives.

    Parameters
    ----------
    app:
        The ASGI app behind the guard (BentoML's).
    max_bytes:
        The cap on a request body, for every endpoint and content type.
    file_fields:
        Form fields that must carry an uploaded file, never text.
    """

    def __init__(self, app, max_bytes: int, file_fields: Iterable[str] = ("audio",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.file_fields = frozenset(file_fields)

    def _too_large(self, size: str) -> Refused:
        return Refused(
            413,
            f"request body {size} is over the limit of {self.max_bytes:,} bytes "
            f"({self.max_bytes / 2**20:g} MiB, package.max_upload_mb)",
        )

    def _check_headers(self, headers: dict[bytes, bytes]) -> _FileFieldWatch | _UrlencodedWatch | None:
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise Refused(400, f"Content-Length is not a byte count: {length[:40]!r}")
            if int(length) > self.max_bytes:
                raise self._too_large(f"of {int(length):,} bytes")
        kind, options = parse_options_header(headers.get(b"content-type", b""))
        if kind in PICKLED:
            # BentoML's own pickle format (BentoML refuses it here too; advisory GHSA-2mcr-m9qx-5vwr).
            raise Refused(415, f"{kind.decode()} is not accepted: send JSON or multipart/form-data")
        if kind == b"application/x-www-form-urlencoded" and self.file_fields:
            # A urlencoded form can only carry text, and BentoML would fetch a file field's text as a URL.
            return _UrlencodedWatch(self.file_fields)
        if kind != b"multipart/form-data":
            return None
        boundary = options.get(b"boundary")
        if not boundary:
            raise Refused(400, "multipart/form-data without a boundary parameter")
        return _FileFieldWatch(boundary, self.file_fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            watch = self._check_headers(dict(scope.get("headers", [])))
        except Refused as refused:
            await _answer(send, refused)
            return
        received = 0
        refusal: list[Refused] = []

        async def guarded_receive() -> Message:
            nonlocal received
            if refusal:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                try:
                    if received > self.max_bytes:
                        raise self._too_large(f"past {self.max_bytes:,} bytes")
                    if watch is not None:
                        watch.feed(chunk)
                except Refused as refused:
                    refusal.append(refused)
                    return {"type": "http.disconnect"}  # the app stops reading; the answer is ours
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal:
                return  # the app's answer to a body it never fully got
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not refusal:
                raise
        if refusal and not started:
            await _answer(send, refusal[0])


class _UrlencodedWatch:
    """Refuses a urlencoded form that has a file field (it could only be text: a URL to fetch)."""

    def __init__(self, file_fields: frozenset[str]) -> None:
        self.names = [f"&{name}=".encode() for name in sorted(file_fields)]
        self.tail = b"&"  # so that a field at the very start reads like any other

    def feed(self, chunk: bytes) -> None:
        window = self.tail + chunk
        for name in self.names:
            if name in window:
                raise Refused(
                    400,
                    f"{name[1:-1].decode()}: expected an uploaded file (multipart/form-data), got a "
                    "urlencoded text value; bgmfit never downloads URLs named in a request",
                )
        self.tail = window[-max(len(n) for n in self.names) :]


async def _answer(send: Send, refused: Refused) -> None:
    body = json.dumps({"error": str(refused)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
