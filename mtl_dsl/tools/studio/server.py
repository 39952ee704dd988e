"""`mtl studio`: the server, on 127.0.0.1 only, on a free port unless one is asked for.

The socket is bound here (port 0: the system picks a free one) and handed to uvicorn, so the
printed URL is the port actually listened on and no other process can take it in between.
uvicorn is told not to configure logging (`log_config=None`: the interpreter's logging stays
as the caller set it) and not to log requests, whose URLs carry the token; the URL is printed
once. Ctrl-C stops the server; the runs it started get SIGINT first, which saves them
resumably (tools/studio/jobs.py).
"""

from __future__ import annotations

import socket
import threading
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import uvicorn

from .files import open_folder
from .guard import new_token
from .routes import Studio

HOST = "127.0.0.1"


class CannotListen(RuntimeError):
    """The port asked for is taken (or not ours to take)."""


def bind(port: int) -> socket.socket:
    """A listening socket on the loopback address (OSError when the port is taken)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, token: str, path: str | None = None) -> str:
    from urllib.parse import quote

    return f"http://{HOST}:{sock.getsockname()[1]}/?token={token}" + \
        (f"&path={quote(path)}" if path else "")


def server(studio: Studio) -> uvicorn.Server:
    """The uvicorn server of a studio (logging left alone, no access log, a short grace for
    open event streams at shutdown)."""
    config = uvicorn.Config(studio.app(), log_config=None, access_log=False,
                            log_level="warning", lifespan="on", timeout_graceful_shutdown=1,
                            ws="none")
    return uvicorn.Server(config)


def serve(target: Path, port: int = 0, open_browser: bool = False, runs: Path | None = None,
          echo: Callable[[str], None] = print) -> int:
    """Serve the studio on `target` (a spec or a folder) until Ctrl-C; 0 when it stopped."""
    folder, first = open_folder(target, runs)
    token = new_token()
    try:
        sock = bind(port)
    except OSError as err:
        raise CannotListen(f"cannot listen on {HOST}:{port}: {err.strerror or err}") from None
    url = url_of(sock, token)
    echo(f"mtl studio: {folder.root} (runs in {folder.runs})\n  {url}\n"
         "Ctrl-C stops it (and saves the runs it started, resumably).")
    if open_browser:
        webbrowser.open(url)
    try:
        server(Studio(folder, token, first)).run(sockets=[sock])
    finally:
        sock.close()
    return 0


@dataclass
class Running:
    """A studio served on a thread of this process (a notebook, the tests): its URL, token
    and state; `stop()` shuts it down as Ctrl-C does."""

    url: str
    base: str
    token: str
    studio: Studio
    _server: uvicorn.Server
    _thread: threading.Thread
    _sock: socket.socket

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()


def start_in_thread(target: Path, runs: Path | None = None, timeout: float = 20.0) -> Running:
    """Serve the studio on `target` from a thread; returns once it answers."""
    folder, first = open_folder(target, runs)
    token = new_token()
    sock = bind(0)
    studio = Studio(folder, token, first)
    srv = server(studio)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="mtl-studio")
    thread.start()
    deadline = time.monotonic() + timeout
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not srv.started:
        srv.should_exit = True
        sock.close()
        raise RuntimeError("the studio's server did not start")
    base = f"http://{HOST}:{sock.getsockname()[1]}"
    return Running(url_of(sock, token), base, token, studio, srv, thread, sock)
