"""The studio's HTTP interface: the page, JSON endpoints and server-sent event streams
(docs/studio.md lists them). Every route sits behind guard.Guard (the token, loopback, the
body limit); every path a request names goes through files.Folder or runs.run_dir.

The analysis routes take the editor's whole text each time (a spec is a few kilobytes) and
answer from the analysis core (tools/studio/documents.py), so each answer is about exactly the
text the page has; blocking work (the analysis, `dot`) runs on worker threads.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from shutil import which
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, RedirectResponse,
                                 Response, StreamingResponse)
from starlette.routing import Route

from ...language.diagnostics import spec_errors
from .compare_view import compare_runs
from .documents import Documents
from .files import Folder, NotASpec
from .guard import BodyTooLarge, Guard, OutsideFolder, relative_to_root
from .jobs import Jobs
from .page import ASSETS, asset, index, language
from .runs import FILES, event, follow, records, run_dir, table

SSE_HEADERS = {"X-Accel-Buffering": "no"}


class BadRequest(ValueError):
    """A request the page should never send: a missing field, a wrong type."""


class Studio:
    """The state behind the routes: the folder, its documents and its training jobs."""

    def __init__(self, folder: Folder, token: str, first: str | None) -> None:
        self.folder, self.token, self.first = folder, token, first
        self.documents = Documents()
        self.jobs = Jobs(folder)
        self.stopping = asyncio.Event()

    def app(self) -> Guard:
        """The ASGI application: the routes behind the guard."""
        r = self
        routes = [Route("/", r.page), Route("/save", r.save_form, methods=["POST"]),
                  Route("/static/{name}", r.static),
                  Route("/api/state", r.state), Route("/api/spec", r.spec),
                  Route("/api/spec", r.save, methods=["POST"]),
                  Route("/api/check", r.check, methods=["POST"]),
                  Route("/api/diagram", r.diagram, methods=["POST"]),
                  Route("/api/hover", r.hover, methods=["POST"]),
                  Route("/api/complete", r.complete, methods=["POST"]),
                  Route("/api/train", r.train, methods=["POST"]),
                  Route("/api/jobs", r.job_list), Route("/api/jobs/{id:int}/stop", r.stop,
                                                        methods=["POST"]),
                  Route("/api/jobs/{id:int}/events", r.job_events),
                  Route("/api/runs", r.runs), Route("/api/runs/{name}", r.run),
                  Route("/api/runs/{name}/events", r.run_events),
                  Route("/api/runs/{name}/files/{file}", r.run_file),
                  Route("/api/compare", r.compare, methods=["POST"])]
        errors = {OutsideFolder: _refused(403), NotASpec: _refused(404),
                  BadRequest: _refused(400), BodyTooLarge: _refused(413)}
        return Guard(Starlette(routes=routes, exception_handlers=errors,
                               lifespan=self._lifespan), self.token)

    @asynccontextmanager
    async def _lifespan(self, app):
        yield
        self.stopping.set()  # the streams end; the jobs save and exit as Stop makes them
        await run_in_threadpool(self.jobs.close)

    # ---- the page ------------------------------------------------------------------

    async def page(self, request: Request) -> HTMLResponse:
        path = request.query_params.get("path") or self.first
        text, found = "", None
        if path is not None:
            spec = self.folder.spec_path(path)
            text = spec.read_text(encoding="utf-8")
            found = await run_in_threadpool(self.documents.analysis, spec, text)
        return HTMLResponse(index(self.token, path, text, found, self.folder.root.name))

    async def save_form(self, request: Request) -> Response:
        """The page without scripts: the textarea's form saves, then the page reloads."""
        form = parse_qs((await request.body()).decode("utf-8"))
        path, text = form.get("path", [""])[0], form.get("text", [""])[0]
        await run_in_threadpool(self.folder.save, path, text)
        return RedirectResponse(f"/?token={quote(self.token)}&path={quote(path)}", 303)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = asset(name)
        if body is None:
            return JSONResponse({"error": f"no asset {name!r}"}, 404)
        return Response(body, media_type=ASSETS[name])

    async def state(self, request: Request) -> JSONResponse:
        return JSONResponse({"folder": self.folder.root.name, "specs": self.folder.specs(),
                             "open": self.first, "language": language(),
                             "runs": relative_to_root(self.folder.root, self.folder.runs)
                             if self.folder.runs != self.folder.root else ".",
                             "graphviz": which("dot") is not None})

    # ---- the editor ------------------------------------------------------------------

    async def spec(self, request: Request) -> JSONResponse:
        path = request.query_params.get("path", "")
        text = await run_in_threadpool(self.folder.read, path)
        return JSONResponse({"path": path, "text": text})

    async def save(self, request: Request) -> JSONResponse:
        body = await _json(request, path=str, text=str)
        saved = await run_in_threadpool(self.folder.save, body["path"], body["text"])
        return JSONResponse({"saved": body["path"], "bytes": saved.stat().st_size})

    async def check(self, request: Request) -> JSONResponse:
        body = await _json(request, path=str, text=str)
        spec = self.folder.spec_path(body["path"], exists=False)
        found = await run_in_threadpool(self.documents.check, spec, body["text"],
                                        bool(body.get("data")))
        return JSONResponse({**found, "version": body.get("version")})

    async def diagram(self, request: Request) -> JSONResponse:
        body = await _json(request, path=str, text=str)
        spec = self.folder.spec_path(body["path"], exists=False)
        found = await run_in_threadpool(self.documents.diagram, spec, body["text"])
        return JSONResponse({**found, "version": body.get("version")})

    async def hover(self, request: Request) -> JSONResponse:
        body = await _json(request, path=str, text=str, line=int, column=int)
        spec = self.folder.spec_path(body["path"], exists=False)
        text = await run_in_threadpool(self.documents.hover, spec, body["text"], body["line"],
                                       body["column"])
        return JSONResponse({"markdown": text})

    async def complete(self, request: Request) -> JSONResponse:
        body = await _json(request, path=str, text=str, line=int, column=int)
        spec = self.folder.spec_path(body["path"], exists=False)
        return JSONResponse(await run_in_threadpool(
            self.documents.complete, spec, body["text"], body["line"], body["column"]))

    # ---- training ------------------------------------------------------------------

    async def train(self, request: Request) -> JSONResponse:
        """Start `mtl compile SPEC --train` (or `--resume RUN`) on the saved spec."""
        body = await _json(request, path=str)
        spec = self.folder.spec_path(body["path"])
        resume = body.get("resume")
        if resume is not None:
            resume = run_dir(self.folder.runs, str(resume)).name
        found = await run_in_threadpool(self.documents.analysis, spec,
                                        spec.read_text(encoding="utf-8"))
        if spec_errors(found.diagnostics):
            return JSONResponse({"error": "the saved spec has errors: fix and save it first"},
                                409)
        job = await run_in_threadpool(self.jobs.start, spec, resume)
        return JSONResponse(job.describe())

    async def job_list(self, request: Request) -> JSONResponse:
        return JSONResponse([j.describe() for j in self.jobs.all()])

    async def stop(self, request: Request) -> JSONResponse:
        return JSONResponse({"stopped": self.jobs.stop(request.path_params["id"])})

    async def job_events(self, request: Request) -> Response:
        """A job's state until its run folder appears, then the run's records; the job's
        final state (with its console's last lines) at the end."""
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, 404)

        async def stream():
            yield event("job", job.describe())
            while self.jobs.get(job.id).run is None and job.returncode is None:
                if self.stopping.is_set():
                    return
                await asyncio.sleep(0.2)
            if job.run is not None:
                yield event("job", job.describe())
                async for message in follow(self.folder.runs / job.run, 0,
                                            lambda: job.returncode is None, self.stopping):
                    yield message
            while job.returncode is None and not self.stopping.is_set():
                await asyncio.sleep(0.1)  # the output reader has the last lines
            yield event("job", job.describe())

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    # ---- runs ----------------------------------------------------------------------

    async def runs(self, request: Request) -> JSONResponse:
        rows = await run_in_threadpool(table, self.folder.runs, self.jobs.live())
        return JSONResponse(rows)

    async def run(self, request: Request) -> JSONResponse:
        folder = run_dir(self.folder.runs, request.path_params["name"])
        found = await run_in_threadpool(records, folder)
        spec = folder / "spec.mtl"
        diagram = await run_in_threadpool(self.documents.diagram, spec, spec.read_text(
            encoding="utf-8")) if spec.is_file() else {"svg": None, "reason": "no spec.mtl"}
        return JSONResponse({"name": folder.name, "records": found, "diagram": diagram,
                             "files": [f for f in FILES if (folder / f).is_file()],
                             "job": self.jobs.live().get(folder.name)})

    async def run_events(self, request: Request) -> Response:
        folder = run_dir(self.folder.runs, request.path_params["name"])
        offset = request.headers.get("last-event-id", "0")
        job = self.jobs.live().get(folder.name)
        running = (lambda: self.jobs.get(job).returncode is None) if job else (lambda: False)
        return StreamingResponse(
            follow(folder, int(offset) if offset.isdigit() else 0, running, self.stopping),
            media_type="text/event-stream", headers=SSE_HEADERS)

    async def run_file(self, request: Request) -> Response:
        folder = run_dir(self.folder.runs, request.path_params["name"])
        name = request.path_params["file"]
        if name not in FILES or not (folder / name).is_file():
            return JSONResponse({"error": f"no file {name!r} in the run"}, 404)
        return FileResponse(folder / name, media_type="text/plain; charset=utf-8"
                            if name.endswith(".mtl") else "image/png")

    async def compare(self, request: Request) -> JSONResponse:
        body = await _json(request, runs=list)
        names = [str(n) for n in body["runs"]]
        if len(names) < 2:
            raise BadRequest("select two runs or more to compare")

        def spec_of(folder: Path):
            spec = folder / "spec.mtl"
            if not spec.is_file():
                return None
            found = self.documents.analysis(spec, spec.read_text(encoding="utf-8"))
            return found.checked.spec if found.checked is not None else None

        return JSONResponse(await run_in_threadpool(compare_runs, self.folder.runs, names,
                                                    spec_of))


async def _json(request: Request, **fields: type) -> dict:
    """The request's JSON object, with each named field present and of its type."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body is not a JSON object")
    for name, kind in fields.items():
        if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool):
            raise BadRequest(f"the request needs '{name}' ({kind.__name__})")
    return body


def _refused(status: int):
    async def handler(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status)

    return handler
