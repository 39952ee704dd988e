"""What keeps the studio to its user and its folder (docs/studio.md, "Safety").

The server listens on loopback only, yet any page in the user's browser and any local process
can reach a loopback port. So, as Jupyter does, every request must carry the random token
printed in the studio's URL (`?token=` or the `X-Mtl-Token` header; compared in constant time),
the Host header must name the loopback address (a rebound DNS name is refused), a body is at
most MAX_BODY bytes, and no response allows another origin (no CORS headers; a strict
Content-Security-Policy). `inside` is the one way a request's path becomes a file: under the
studio's folder, symlinks resolved, `..` refused.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path, PurePosixPath
from typing import Awaitable, Callable
from urllib.parse import parse_qs

MAX_BODY = 1 << 20  # bytes; a spec is a few kilobytes
TOKEN_HEADER = b"x-mtl-token"
LOOPBACK = ("127.0.0.1", "localhost")
HEADERS = [  # on every response: no cache, no sniffing, no referrer (the URL holds the token)
    (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'")]


class OutsideFolder(ValueError):
    """A path that would leave the studio's folder."""


def new_token() -> str:
    """A random token for the URL (as Jupyter's: `secrets.token_urlsafe`)."""
    return secrets.token_urlsafe(32)


def inside(root: Path, relative: str) -> Path:
    """`relative` (a '/'-separated path from the page) as a file under `root`, symlinks
    resolved; an absolute path, a `..` part or a link that leads out raises OutsideFolder."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if not parts or relative.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise OutsideFolder(f"not a path inside the studio's folder: {relative!r}")
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and not path.is_relative_to(base):
        raise OutsideFolder(f"{relative!r} leads outside the studio's folder")
    return path


def relative_to_root(root: Path, path: Path) -> str:
    """A file under `root` as the page names it ('/'-separated)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class Guard:
    """ASGI middleware: the token, the Host header and the body limit on every HTTP request
    (server-sent event streams included), and the safety headers on every response."""

    def __init__(self, app: ASGIApp, token: str, max_body: int = MAX_BODY) -> None:
        self.app, self.token, self.max_body = app, token.encode(), max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websocket route: refuse the handshake
            return await _close(send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await _reply(send, *refusal)
        await self.app(scope, self._limited(receive, send), _with_headers(send))

    def _refusal(self, scope: dict) -> tuple[int, str] | None:
        headers = dict(scope.get("headers") or [])
        if not _loopback_host(headers.get(b"host", b"")):
            return 403, "the studio answers only on 127.0.0.1 (the Host header names another)"
        if not hmac.compare_digest(self._given(scope, headers), self.token):
            return 403, "a missing or wrong token: open the URL `mtl studio` printed"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"the request body is over {self.max_body} bytes"
        return None

    @staticmethod
    def _given(scope: dict, headers: dict[bytes, bytes]) -> bytes:
        """The token the request carries (header first, then `?token=`); b'' when none."""
        if TOKEN_HEADER in headers:
            return headers[TOKEN_HEADER]
        found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])
        return found[-1].encode()

    def _limited(self, receive: Callable, send: Callable) -> Callable:
        """`receive` that stops a body streamed past the limit (no Content-Length given)."""
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return limited


class BodyTooLarge(Exception):
    """A body streamed past the limit (the route turns it into a 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over {limit} bytes")


def _loopback_host(host: bytes) -> bool:
    name = host.decode("latin-1").rsplit(":", 1)[0] if host.count(b":") == 1 else \
        host.decode("latin-1")
    return name in LOOPBACK


def _with_headers(send: Callable) -> Callable:
    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
        await send(message)

    return sending


async def _reply(send: Callable, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _close(send: Callable) -> None:
    await send({"type": "websocket.close", "code": 1008})
