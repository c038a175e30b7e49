"""The explorer's routes: the page, its static files, and the JSON API.

    GET  /                  the page (static HTML; it reads its config from the URL)
    GET  /static/NAME       explore.js, explore.css, plotly.min.js (from the installed plotly)
    GET  /api/meta          the config fields: defaults, choices, the preloaded config, the budget
    POST /api/run           config fields (JSON object; empty = defaults) -> the tables as JSON
    POST /api/stream        the same, as NDJSON: per depth prefix its tables ("part": "tables"), then its
                            verdict and theory lines ("part": "verdict"); the last prefix's are final
    GET  /api/download      ?FIELD=VALUE... -> a zip of what `initscope run` writes (CSVs, report.html)
    GET  /api/health        {"ok": true, "running": N, "cache": {"hits", "misses", "runs", "bytes"} or null}

Answers: 200; 400 bad input (make_config's one-line message, as the CLI
prints it, with long values cut: an answer never echoes the body); 403 a
run asked for by another web site; 413 over the size budget (naming the
field to reduce), or a body over `MAX_BODY` (refused from its
Content-Length before a byte of it is read, or as a chunked body streams
past the limit); 415 a body that is not JSON; 429 superseded by the same
client's newer request; 503 too many requests waiting; 500 anything
unexpected (with its reason; the server carries on). `?orient=columns` gives
compact column tables.

Other web sites: the runs (/api/run, /api/stream, /api/download) cost this
machine's time, so a request a browser marks as sent by another site
(Sec-Fetch-Site cross-site or same-site, or an Origin or Referer naming
another host) is refused 403 before anything runs; a client that is not a
browser sends none of these and is answered. On loopback the Host header
must name this machine (`guard.Guard`), which keeps DNS-rebinding pages out.

A run is a function of its config, so the tables of recent runs are kept
(`Settings.cache_bytes`, `--cache-mb`) and a repeated config (a slider moved
back, a reload, the download of the run on screen) is answered without
running it again; `timing_ms.cached` says so.
"""

from __future__ import annotations

import functools
import io
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from initscope.core.activations import ACTIVATIONS
from initscope.core.data import TARGETS
from initscope.core.initializers import REGISTRY
from initscope.core.metrics import METRICS
from initscope.core.network import NORMS, READOUTS, SHIFTS
from initscope.explore.api import (BUILTIN_DATA, ORIENTS, RequestError, check_budget, config_from_fields, config_json,
                                   encode, fields_from_query, metric_display, result_payload)
from initscope.explore.guard import MAX_BODY, Guard, too_large
from initscope.explore.jobs import FIRST_STEP_SIZE, STREAM_SIZE, Cancelled, Jobs, RunCache, depth_plan
from initscope.explore.overlays import theory_payload
from initscope.report.flags import flags_table
from initscope.report.page import page_writer
from initscope.study.run_files import write_run
from initscope.study.config import Config, DTYPES, INIT_TRAIN
from initscope.study.memory import MemoryBudgetError
from initscope.study.runner import run
from initscope.study.verdict import run_verdict

__all__ = ["create_app", "Settings", "compute", "tables_part", "stream_parts", "verdict_part", "DEFAULT_MAX_SIZE",
           "CLIENT_HEADER", "DATA_FILES_LIMIT"]

DEFAULT_MAX_SIZE = 4e8  # ~1.5 s of the study per 1e8 on one core; a larger study belongs to `initscope run`
CLIENT_HEADER = "x-initscope-client"
DEFAULT_CACHE_BYTES = 256 * 2**20
STATIC = Path(__file__).with_name("static")
_JSON = "application/json"
# A request body is a config's fields: a few hundred bytes. Anything larger is refused unread.
# The routes that run a study: another web site must not be able to make this machine compute.
_LONGEST_ECHO = 80  # characters of a header's value an error message may repeat
_LONGEST_MESSAGE = 400  # characters of an error message: room for a constraint's choices, not for a body


@dataclass
class Settings:
    """What `initscope explore` was started with."""

    data_dir: Path | None = None
    max_size: float = DEFAULT_MAX_SIZE
    stream_size: float = STREAM_SIZE
    first_step_size: float = FIRST_STEP_SIZE
    slots: int = 2
    queue: int = 16
    workers: int | None = None  # threads of one run (initscope.run's `workers`)
    preload: dict[str, Any] = field(default_factory=dict)
    # Host headers answered (None: any). On loopback only the loopback names: a web page that
    # rebinds its own DNS name to 127.0.0.1 then cannot read the answers (or the data they show).
    allowed_hosts: tuple[str, ...] | None = None
    # Tables of the latest runs kept to answer the same config again (0: keep none).
    cache_bytes: int = DEFAULT_CACHE_BYTES


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type=_JSON, headers=headers)


def _error(exc: RequestError) -> Response:
    headers = {"Retry-After": str(exc.details["retry_after"])} if "retry_after" in exc.details else None
    return _json(_unechoed(exc.payload()), exc.status, headers)


def _unechoed(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with a long message cut in its middle (where a request's value sits, between the
    parameter's constraint and "instead."): a request's own, possibly huge, text never comes back whole."""
    message = payload.get("error")
    if not isinstance(message, str) or len(message) <= _LONGEST_MESSAGE:
        return payload
    head, tail = message[:_LONGEST_MESSAGE - 60], message[-40:]
    return {**payload, "error": f"{head}... ({len(message) - len(head) - len(tail)} characters left out) ...{tail}"}


def _handles_errors(handler):
    @functools.wraps(handler)
    async def wrapped(*args) -> Response:  # (request) or (self, request)
        try:
            return await handler(*args)
        except RequestError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - as the CLI's exit 1: the reason, and the server carries on
            return _error(unexpected(exc))

    return wrapped


def unexpected(exc: Exception) -> RequestError:
    return RequestError(500, f"unexpected error: {type(exc).__name__}: {exc}")


async def _body_fields(request: Request) -> dict[str, Any]:
    """Config fields from a JSON object body (empty body: the defaults).

    The content type is judged before a byte is read, and the body is read in
    its chunks up to MAX_BODY (`guard.Guard` has refused a larger Content-Length
    already; a chunked body is counted as it streams)."""
    ctype = request.headers.get("content-type", "")
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    # Requiring JSON also keeps other web sites out: a browser sends it cross-origin only after a preflight.
    if has_body and "json" not in ctype.split(";")[0].lower():
        raise RequestError(415, f"The request body must be JSON (Content-Type: application/json). "
                                f"Got content type {ctype[:_LONGEST_ECHO]!r} instead.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return {}
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, never the document.
        raise RequestError(400, f"The request body must be a JSON object of config fields. "
                                f"Got invalid JSON: {str(exc)[:2 * _LONGEST_ECHO]}") from None
    if not isinstance(fields, dict):
        raise RequestError(400, f"The request body must be a JSON object of config fields. "
                                f"Got a {type(fields).__name__} instead.")
    return fields


def _orient(request: Request) -> str:
    """?orient=, checked before anything runs (a stream's status cannot change once it has begun)."""
    orient = request.query_params.get("orient", "records")
    if orient not in ORIENTS:
        raise RequestError(400, f"The 'orient' parameter must be one of {list(ORIENTS)}. "
                                f"Got {orient[:_LONGEST_ECHO]!r} instead.")
    return orient


def compute(config, *, orient: str = "records", workers: int | None = None, final: bool = True,
            depth: int | None = None, on_layer=None, cache: RunCache | None = None) -> bytes:
    """Run one config and encode its whole answer (tables and verdict, one JSON object) -- on a pool thread.

    on_layer: initscope.run's layer hook (a ticket's, which raises `Cancelled` to stop the run);
    cache: answers already computed, by config."""
    result, payload = tables_part(config, orient=orient, workers=workers, on_layer=on_layer, cache=cache)
    t0 = time.perf_counter()
    payload["verdict"] = verdict(result, cache)
    payload["timing_ms"]["verdict"] = round((time.perf_counter() - t0) * 1e3, 2)
    payload.update(final=final, depth=config.depth, of=depth or config.depth)
    return encode(payload)


def tables_part(config, *, orient: str = "records", workers: int | None = None, on_layer=None,
                cache: RunCache | None = None) -> tuple[Any, dict[str, Any]]:
    """(the run's records, its tables as a payload): the run (or the cached one) and its JSON-ready tables."""
    t0 = time.perf_counter()
    result = cache.get(config) if cache is not None else None
    cached = result is not None
    if result is None:
        result = _run(config, workers=workers, on_layer=on_layer)
        if cache is not None:
            cache.put(config, result)
    t1 = time.perf_counter()
    payload = result_payload(result, orient)
    payload["timing_ms"] = {"run": round((t1 - t0) * 1e3, 2), "tables": round((time.perf_counter() - t1) * 1e3, 2),
                            "cached": cached}
    return result, payload


def stream_parts(config, *, orient: str, workers: int | None, final: bool, depth: int, on_layer=None,
                 cache: RunCache | None = None) -> tuple[Any, bytes]:
    """/api/stream's first message of a depth prefix: its tables, without the verdict (`verdict_part`)."""
    result, payload = tables_part(config, orient=orient, workers=workers, on_layer=on_layer, cache=cache)
    payload.update(part="tables", final=final, depth=config.depth, of=depth)
    return result, encode(payload)


def verdict_part(result, *, final: bool, depth: int, cache: RunCache | None = None) -> bytes:
    """/api/stream's second message of a depth prefix: the verdict of the run whose tables were just sent,
    and the theory lines of its metric panels (`overlays.theory_payload`)."""
    t0 = time.perf_counter()
    words = verdict(result, cache)
    t1 = time.perf_counter()
    lines = cache.derived(result, "theory", lambda: theory_payload(result)) if cache else theory_payload(result)
    return encode({"part": "verdict", "verdict": words, "theory": lines, "final": final, "depth": result.config.depth,
                   "of": depth, "timing_ms": {"verdict": round((t1 - t0) * 1e3, 2),
                                              "theory": round((time.perf_counter() - t1) * 1e3, 2)}})


def _run(config, **kw):
    """initscope.run; a run that cannot fit this machine's memory is a 413 naming the parameter to reduce."""
    try:
        return run(config, **kw)
    except MemoryBudgetError as exc:
        raise RequestError(413, str(exc)) from None


def verdict(result, cache: RunCache | None = None) -> dict[str, Any]:
    """What happened, per initializer, in words: the study's verdict (as `initscope run` prints it and
    the report shows it first) and the flags table ("first layer where ..."). Once per cached run."""
    if cache is not None:
        return cache.derived(result, "verdict", lambda: verdict(result))
    words = run_verdict(result.metrics, result.spectra, result.flags, config=result.config, gains=result.gains,
                        lost_derived=True)  # run() added them to result.flags
    m = result.metrics
    # flags_table reads only these metrics (and readout); filtering first makes it ~2x faster.
    used = m.loc[m["metric"].isin(_FLAG_METRICS), ["init", "trial", "layer", "metric", "value", "readout"]]
    table = flags_table(used, result.flags)
    return {
        "initializers": [{"init": v.init, "title": v.title, "sentences": list(v.sentences)} for v in words.verdicts],
        "notes": list(words.notes),
        "lines": words.lines(),
        "flags": table.to_dict("records"),
    }


_FLAG_METRICS = ("rms", "effective_rank", "dead_fraction", "grad_norm")


def create_app(settings: Settings | None = None) -> Starlette:
    """The explorer's ASGI app."""
    api = _Api(settings or Settings())
    routes = [
        Route("/", api.page),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/static/{name}", api.static),
        Route("/api/meta", api.meta),
        Route("/api/health", api.health),
        Route("/api/run", api.run, methods=["POST"]),
        Route("/api/stream", api.stream, methods=["POST"]),
        Route("/api/download", api.download, methods=["GET", "POST"]),
    ]
    from starlette.middleware import Middleware

    app = Starlette(routes=routes, middleware=[Middleware(Guard, allowed_hosts=api.settings.allowed_hosts)])
    app.state.jobs = api.jobs
    app.state.settings = api.settings
    return app


class _Api:
    """The route handlers, sharing the settings and the pool of runs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.jobs = Jobs(slots=settings.slots, queue=settings.queue)
        self.cache = RunCache(settings.cache_bytes) if settings.cache_bytes > 0 else None

    def parse(self, fields: dict[str, Any]):
        config = config_from_fields(fields, data_dir=self.settings.data_dir)
        check_budget(config, self.settings.max_size, workers=self.settings.workers)
        return config

    async def computed(self, ticket, fn):
        """fn(on_layer) on a pool thread once the ticket holds a slot; a cancelled run is the ticket's error."""
        try:
            async with self.jobs.slot(ticket):
                return await self.jobs.call(lambda: fn(ticket.on_layer))
        except Cancelled:
            raise ticket.error() from None
        finally:
            self.jobs.release(ticket)

    @_handles_errors
    async def run(self, request: Request) -> Response:
        started = time.perf_counter()
        orient, workers = _orient(request), self.settings.workers
        config = self.parse(await _body_fields(request))
        if self.jobs.refusing():  # before the ticket: a refused request supersedes nothing
            raise self.jobs.busy()
        ticket = self.jobs.ticket(request.headers.get(CLIENT_HEADER))
        body = await self.computed(ticket, lambda hook: compute(config, orient=orient, workers=workers, on_layer=hook,
                                                                cache=self.cache))
        total = (time.perf_counter() - started) * 1e3
        return Response(body, media_type=_JSON, headers={"Server-Timing": f"total;dur={total:.1f}"})

    @_handles_errors
    async def stream(self, request: Request) -> Response:
        orient = _orient(request)
        config = self.parse(await _body_fields(request))
        if self.jobs.refusing():  # now: once the answer has begun, its status cannot say so
            raise self.jobs.busy()
        ticket = self.jobs.ticket(request.headers.get(CLIENT_HEADER))
        plan = depth_plan(config, stream_size=self.settings.stream_size, first=self.settings.first_step_size)
        return StreamingResponse(self._lines(config, plan, ticket, orient),
                                 media_type="application/x-ndjson",
                                 headers={"X-Initscope-Plan": ",".join(map(str, plan))})

    async def _lines(self, config, plan: list[int], ticket, orient: str):
        """Two JSON lines per depth prefix (its tables, then its verdict: the page draws the one while the
        server computes the other); a failure after the first byte is the last line."""
        jobs, workers, cache = self.jobs, self.settings.workers, self.cache
        try:
            async with jobs.slot(ticket):
                for d in plan:
                    ticket.check()
                    step = config if d == config.depth else _with_depth(config, d)
                    final = d == config.depth
                    result, body = await jobs.call(lambda: stream_parts(
                        step, orient=orient, workers=workers, final=final, depth=config.depth,
                        on_layer=ticket.on_layer, cache=cache if final else None))
                    yield body + b"\n"
                    ticket.check()
                    yield await jobs.call(lambda: verdict_part(result, final=final, depth=config.depth,
                                                               cache=cache)) + b"\n"
        except (RequestError, Cancelled) as exc:
            error = exc if isinstance(exc, RequestError) else ticket.error()
            yield orjson.dumps({**error.payload(), "status": error.status}) + b"\n"
        except Exception as exc:  # noqa: BLE001 - as everywhere here: the reason, and the server carries on
            error = unexpected(exc)
            yield orjson.dumps({**error.payload(), "status": error.status}) + b"\n"
        finally:
            jobs.release(ticket)

    @_handles_errors
    async def download(self, request: Request) -> Response:
        if request.method == "POST":
            fields = await _body_fields(request)
        else:
            fields = fields_from_query(list(request.query_params.multi_items()))
        config, workers = self.parse(fields), self.settings.workers
        data = await self.computed(self.jobs.ticket(None),
                                   lambda hook: run_zip(config, workers=workers, on_layer=hook, cache=self.cache))
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="initscope-run.zip"'})

    async def meta(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        # Off the event loop: a first listing of a large --data-dir must not stall the other requests.
        return _json(await run_in_threadpool(meta, self.settings))

    async def health(self, request: Request) -> Response:
        cache = self.cache
        return _json({"ok": True, "running": self.jobs.running,
                      "cache": None if cache is None else {"hits": cache.hits, "misses": cache.misses,
                                                           "runs": len(cache), "bytes": cache.bytes}})

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def static(self, request: Request) -> Response:
        path = _static_files().get(request.path_params["name"])
        if path is None:
            return _json({"error": "No such file."}, 404)
        return FileResponse(path)


def _with_depth(config, depth: int):
    import dataclasses

    return dataclasses.replace(config, depth=depth)


@functools.lru_cache(maxsize=1)
def _static_files() -> dict[str, Path]:
    """The only files the page may load: ours, and plotly.js from the installed plotly package."""
    import plotly

    files = {p.name: p for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
    files["plotly.min.js"] = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return files


def run_zip(config, *, workers: int | None = None, on_layer=None, cache: RunCache | None = None) -> bytes:
    """The files `initscope run` writes for this config (CSVs, config.toml, report.html), zipped
    (from the run on screen when the cache still holds it)."""
    result = cache.get(config) if cache is not None else None
    if result is None:
        result = _run(config, workers=workers, on_layer=on_layer)
    with tempfile.TemporaryDirectory(prefix="initscope-explore-") as tmp:
        out = Path(tmp) / "run"
        write_run(out, result, report=page_writer(result))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(out.iterdir()):
                if path.is_file():
                    zf.write(path, path.name)
    return buffer.getvalue()


def meta(settings: Settings) -> dict[str, Any]:
    """What the page needs to draw its controls: every field's default and choices."""
    files = [] if settings.data_dir is None else list(data_files(settings.data_dir.resolve()))
    choices = {
        "init": list(REGISTRY), "activation": list(ACTIVATIONS), "shift": list(SHIFTS), "norm": list(NORMS),
        "readout": list(READOUTS), "dtype": list(DTYPES), "metrics": list(METRICS), "init_train": list(INIT_TRAIN),
        "data": list(BUILTIN_DATA) + files, "target": list(TARGETS) + ["dataset"],
    }
    defaults = config_json(Config())
    return {
        "fields": list(defaults), "defaults": defaults, "choices": choices,
        "preload": settings.preload, "max_size": settings.max_size,
        "stream_size": settings.stream_size, "has_data_dir": settings.data_dir is not None,
        "metrics": metric_display(),
    }


DATA_FILES_LIMIT = 500  # files the page's data menu lists
_DATA_ENTRIES_LIMIT = 20_000  # folder entries looked at to find them
_DATA_FILES_TTL = 10.0  # seconds a listing is reused: /api/meta comes with every page load


def data_files(root: Path) -> tuple[str, ...]:
    """The .csv/.npy files under `root` (relative, sorted; at most DATA_FILES_LIMIT), from a walk that
    looks at no more than _DATA_ENTRIES_LIMIT entries and follows no link to a folder; the listing is
    reused for _DATA_FILES_TTL seconds, so a huge --data-dir costs one bounded walk, not one per page load."""
    now = time.monotonic()
    with _LISTINGS_LOCK:
        kept = _LISTINGS.get(root)
        if kept is not None and now - kept[0] < _DATA_FILES_TTL:
            return kept[1]
    import os

    found, seen = [], 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            seen += 1
            if Path(name).suffix.lower() in (".csv", ".npy") and os.path.isfile(os.path.join(folder, name)):
                found.append(os.path.relpath(os.path.join(folder, name), root))
        seen += len(dirs)
        if seen >= _DATA_ENTRIES_LIMIT or len(found) >= DATA_FILES_LIMIT:
            break
    listing = tuple(sorted(found)[:DATA_FILES_LIMIT])
    with _LISTINGS_LOCK:
        _LISTINGS[root] = (now, listing)
    return listing


_LISTINGS: dict[Path, tuple[float, tuple[str, ...]]] = {}
_LISTINGS_LOCK = threading.Lock()
