"""`nlp-pipe serve`: one classifier (an export or any classifier artifact) over HTTP, on uvicorn + starlette.

    nlp-pipe serve runs/distill_onnx --port 8000
    curl -s localhost:8000/predict -d '{"texts": ["质量很好，推荐", "太差了"]}'
    -> {"predictions": [{"text": ..., "label": "pos", "probability": 0.97, "probabilities": {...}}, ...]}

POST /predict takes {"texts": [...]} and answers one record per text, the records of `nlp-pipe predict --json`.
GET /health answers {"status": "ok"}; GET /metadata the model, labels, threshold, normalisation, versions, file
hashes and the limits. Requests are micro-batched: the texts arriving within `max_wait_ms` of each other (up
to `gather`) are sorted by length and classified `batch_size` at a time (TextClassifier.predict), so a short
text is not padded to a long one's length. `workers` such batches (default: one per core) run at once in worker
threads, each model call on cores / workers threads, while the event loop keeps reading requests: a small
model's matrices are too small to split across cores (int8 TinyBERT-4: 266 texts/s on one call with 2 threads,
516 with two 1-thread calls at once), and a large one loses little (the 12x768 teacher 16.1 vs 17.5); --workers 1
gives one request all the cores (lower latency when requests are few). On CPU a BERT's throughput hardly grows
past a few texts a call while its padding grows with the batch, hence 4 texts a call for BERTs; a TextCNN or the
baseline gains from 64. The queue is bounded in texts: a request that would overfill it gets 503 at once (the
server never queues more work than it can answer).
Every refusal is a 4xx with a one-line JSON reason; no response carries a traceback. The model is the one
given at start: no request names a file, a model or a path. Bound to 127.0.0.1 unless --host says
otherwise; with an API key (--api-key or NLP_PIPE_API_KEY), /predict and /metadata need it
(`Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time), else 401; an empty key is refused.
The port is bound before the model loads and the socket handed to uvicorn, so a port that is taken is one line and
exit 2 and "serving on" is printed only once it is ours. uvicorn stops on SIGTERM / Ctrl-C after the requests in
flight are answered; the process then exits 143 / 130 with one line. Imports neither torch nor transformers for an
export.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .classifiers.exported import read_export_info
from .classifiers.loaded import EXPORT_JSON, TextClassifier
from .core import process
from .core.errors import UserError
from .core.manifest import read_manifest
from .predict import records
from .text.encoding import unicode_text
from .text.segmenter import default_workers

log = logging.getLogger(__name__)
API_KEY_ENV = "NLP_PIPE_API_KEY"


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_body: int = 1 << 20  # bytes per request body
    max_queue: int = 1024  # texts waiting or being classified; beyond it requests get 503
    batch_size: int = 0  # texts per model call (0: 4 for a BERT, 64 otherwise); the gathered texts are sorted by length first
    gather: int = 64  # texts gathered from the queue before they are sorted and classified
    max_wait_ms: float = 2.0  # how long the first text of a batch waits for others to join it
    workers: int = 0  # model calls at once, each on cores / workers threads (0: one per core)
    body_timeout_s: float = 10.0  # a body not complete by then gets 408 (a stalled client held its connection, and a
    # SIGTERM waited uvicorn's 30 s for it, then printed a cancellation traceback); --body-timeout

    def check(self) -> None:
        for name, value in asdict(self).items():
            defaulted = name in ("max_wait_ms", "batch_size", "workers")  # 0 there: the default
            if value < 0 or (value == 0 and not defaulted):
                raise UserError(f"serve: --{name.replace('_', '-')} must be {'0 (the default) or more' if defaulted else 'positive'} "
                                f"(got {value})")
        smallest = len(json.dumps({"texts": ["x"]}, separators=(",", ":")))
        if self.max_body < smallest:  # no request at all could be answered
            raise UserError(f"serve: --max-body {self.max_body} is below the smallest request ({smallest} bytes, "
                            '{"texts":["x"]}); raise it')
        if self.max_queue < self.max_texts:  # a full-size request would be refused as overloaded however idle the server
            raise UserError(f"serve: --max-queue {self.max_queue} is below --max-texts {self.max_texts}, so a request of "
                            f"{self.max_texts} texts could never be answered; raise --max-queue or lower --max-texts")


class Refused(Exception):
    """A request the server answers with `status` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Batcher:
    """Texts of concurrent requests classified together: a bounded queue and `limits.workers` model calls at a
    time, each gathering its own batch from the queue."""

    def __init__(self, clf: TextClassifier, limits: Limits) -> None:
        self.clf, self.limits = clf, limits
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.pending = 0  # texts queued or in the model
        self.executor = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="nlp-pipe-model")
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run()) for _ in range(self.limits.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def classify(self, texts: list[str]) -> np.ndarray:
        if self.pending + len(texts) > self.limits.max_queue:
            raise Refused(503, f"overloaded: {self.pending} texts are waiting (limit {self.limits.max_queue}); retry shortly")
        self.pending += len(texts)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while size < self.limits.gather:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
                    break
                batch.append(item)
                size += len(item[0])
            texts = [t for part, _ in batch for t in part]
            try:
                probs = await loop.run_in_executor(self.executor, self.clf.predict, texts, self.limits.batch_size)
            except Exception as exc:  # the requests of this batch get a 500 without a traceback; the server goes on
                log.exception("classifying a batch of %d texts failed", len(texts))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(Refused(500, f"the model failed on this batch ({type(exc).__name__})"))
            else:
                start = 0
                for part, future in batch:
                    if not future.done():  # a client that went away leaves a cancelled future
                        future.set_result(probs[start:start + len(part)])
                    start += len(part)
            finally:
                self.pending -= size


def parse_texts(body: bytes, limits: Limits) -> list[str]:
    """The texts of a /predict body, or Refused with the one-line reason."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"malformed JSON: {str(exc).splitlines()[0][:200]}") from None
    except RecursionError:  # "[[[[..." deeper than the parser's stack
        raise Refused(400, "malformed JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise Refused(422, 'the body must be a JSON object: {"texts": ["...", ...]}')
    if "texts" not in payload:
        raise Refused(422, 'missing field "texts": send {"texts": ["...", ...]}')
    unknown = sorted(set(payload) - {"texts"})
    if unknown:  # a request names nothing but its texts: no model, file or path
        raise Refused(422, f'unknown field "{unknown[0]}": the only field is "texts"')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise Refused(422, '"texts" must be a list of strings')
    if not texts:
        raise Refused(422, '"texts" is empty: send at least one text')
    if len(texts) > limits.max_texts:
        raise Refused(413, f"too many texts: {len(texts)} > {limits.max_texts} per request")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise Refused(422, f"texts[{i}] is not a string")
        if not text.strip():
            raise Refused(422, f"texts[{i}] is empty: a classifier needs text to classify")
        if not unicode_text(text):  # a lone surrogate ("\ud800") no tokenizer can take
            raise Refused(422, f"texts[{i}] is not valid Unicode (a lone surrogate)")
        if len(text) > limits.max_chars:
            raise Refused(413, f"texts[{i}] has {len(text)} characters, over the limit of {limits.max_chars}")
    return texts


def metadata(directory: Path, clf: TextClassifier, limits: Limits) -> dict[str, Any]:
    """What GET /metadata answers: enough to tell which model answers and how, no server path."""
    manifest = read_manifest(directory) or {}
    export = read_export_info(directory) if (directory / EXPORT_JSON).exists() else None
    model: dict[str, Any] = {"name": directory.name, "stage": manifest.get("stage"), "fingerprint": manifest.get("fingerprint"),
                             "class": type(clf).__name__}
    if export is not None:
        model |= {"kind": export.get("kind"), "runtime": export.get("runtime"), "file": export.get("model"),
                  "quantize": export.get("quantize"), "source_stage": export["source"].get("stage"),
                  "source_fingerprint": export["source"].get("fingerprint"), "parity": export.get("parity"),
                  "segmenter": export.get("segmenter")}
    versions = {"nlp_pipe": __version__} | ((export or {}).get("versions") or {})
    try:
        import onnxruntime

        versions["onnxruntime_serving"] = onnxruntime.__version__
    except ImportError:
        pass
    return {"model": model, "labels": clf.labels, "threshold": clf.threshold, "halfwidth": clf.halfwidth,
            "versions": versions, "hashes": {f["name"]: f["sha256"] for f in manifest.get("files", [])},
            "limits": asdict(limits)}


def create_app(directory: Path, clf: TextClassifier, limits: Limits, api_key: str | None) -> Any:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    batcher = Batcher(clf, limits)
    meta = metadata(directory, clf, limits)
    key = api_key.encode("utf-8") if api_key else None

    def refuse(status: int, reason: str) -> JSONResponse:
        headers = {"Retry-After": "1"} if status == 503 else ({"WWW-Authenticate": "Bearer"} if status == 401 else None)
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    def authorised(request: Request) -> bool:
        if key is None:
            return True
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization") or ""
        if bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        return hmac.compare_digest(given.encode("utf-8"), key)

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body):
            raise Refused(413, f"body over the limit of {limits.max_body} bytes" if declared.isdigit() else "bad Content-Length")
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body:
                    raise Refused(413, f"body over the limit of {limits.max_body} bytes")
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise Refused(408, f"the body did not arrive within {limits.body_timeout_s:g} s") from None
        return b"".join(chunks)

    async def predict(request: Request) -> JSONResponse:
        if not authorised(request):
            return refuse(401, "missing or wrong API key")
        try:
            texts = parse_texts(await body(request), limits)
            probs = await batcher.classify(texts)
        except Refused as exc:
            return refuse(exc.status, exc.reason)
        except ClientDisconnect:
            return refuse(400, "the client closed the connection before the body was complete")
        return JSONResponse({"predictions": list(records(clf, texts, probs))})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "queued_texts": batcher.pending})

    async def describe(request: Request) -> JSONResponse:
        if not authorised(request):
            return refuse(401, "missing or wrong API key")
        return JSONResponse(meta)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        reason = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return refuse(status, f"{reason}: {request.method} {request.url.path}" if status in (404, 405) else str(reason))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return refuse(500, f"internal error ({type(exc).__name__})")

    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health, methods=["GET"]),
                             Route("/metadata", describe, methods=["GET"])],
                     exception_handlers={HTTPException: http_error, Exception: internal},
                     lifespan=asynccontextmanager(lifespan))


def serve(path: str, host: str, port: int, limits: Limits, api_key: str | None, log_level: str = "warning") -> None:
    """Load the classifier at `path` and answer on host:port until SIGTERM / Ctrl-C."""
    import uvicorn

    directory = Path(path)
    t0 = time.perf_counter()
    limits.check()
    if api_key is None:  # click reads a variable set to "" as unset
        api_key = os.environ.get(API_KEY_ENV)
    if api_key is not None and not api_key.strip():  # e.g. --api-key "$UNSET": serving without a key is asked for by leaving it out
        raise UserError(f"serve: the API key is empty (--api-key or {API_KEY_ENV}), which would let every request in; "
                        f"give a key, or leave out --api-key and unset {API_KEY_ENV} to serve without one")
    with bound_socket(host, port) as sock:  # before loading, so a taken port is refused at once
        cores = default_workers()
        workers = limits.workers or cores
        threads = max(1, cores // workers)
        clf = TextClassifier.load(directory, threads=threads)
        process.serving_threads(threads)
        limits = replace(limits, workers=workers, batch_size=limits.batch_size or (4 if "Bert" in type(clf).__name__ else 64))
        clf.predict(["预热"])  # first-call costs (dictionary load, graph allocation) before the first request
        app = create_app(directory, clf, limits, api_key)
        try:
            sock.listen()
        except OSError as exc:  # another process bound the port too (SO_REUSEADDR) and listened first
            raise address_error(exc, host, port) from None
        where = f"[{host}]" if ":" in host else host
        print(f"serving {directory.name} ({type(clf).__name__}) on http://{where}:{sock.getsockname()[1]}, loaded in "
              f"{time.perf_counter() - t0:.1f} s{', API key required' if api_key else ''}; SIGTERM or Ctrl-C stops it",
              file=sys.stderr, flush=True)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=30,
                                limit_concurrency=max(64, limits.max_queue), timeout_keep_alive=5, server_header=False)
        server = uvicorn.Server(config)
        # uvicorn answers SIGTERM / Ctrl-C itself (the requests in flight first), then re-raises the signal to the
        # handler it found: this one notes it, so the process ends with a line of its own and 128 + the signal (the
        # CLI's 143 / 130), neither killed silently by the signal nor with the CLI's "nothing was published"
        stopped: list[int] = []
        before = {s: signal.signal(s, lambda signum, frame: stopped.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[sock])
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)
    if stopped:
        name = signal.Signals(stopped[0]).name
        print(f"stopped ({name}) {'without waiting for' if server.force_exit else 'after finishing'} the requests in flight",
              file=sys.stderr, flush=True)
        sys.exit(128 + stopped[0])


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for uvicorn to listen on: left to itself, uvicorn binds after the "serving" line
    and reports a taken port as a logged error and exit 3."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)  # uvicorn's own rule (Config.bind_socket)
    except OSError as exc:
        raise address_error(exc, host, port) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart takes the port its predecessor's closed connections hold
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise address_error(exc, host, port) from None
    return sock


def address_error(exc: OSError, host: str, port: int) -> UserError:
    """The one line for a host:port the server cannot listen on."""
    if exc.errno == errno.EADDRINUSE:
        return UserError(f"serve: {host}:{port} is in use by another process; stop it or pick another --port")
    if exc.errno == errno.EACCES:
        return UserError(f"serve: no permission to listen on {host}:{port} (ports below 1024 need root); pick another --port")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return UserError(f"serve: cannot listen on --host {host} ({exc.strerror}): not an address of this machine; "
                         "127.0.0.1 serves this machine only, 0.0.0.0 every network")
    return UserError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}")


@contextmanager
def local_server(path: str | Path, *options: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> Iterator[LocalServer]:
    """`nlp-pipe serve PATH OPTIONS` in a child process on a free 127.0.0.1 port, once /health answers; stopped
    with SIGTERM (then killed after 15 s) on exit. For integration tests and benchmarks of a served model."""
    import httpx

    with socket.socket() as probe:  # a port free now; the child binds it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "nlp_pipe", "serve", str(path), "--port", str(port), *options]
    log_file = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file, text=True, env={**os.environ, **(env or {})})
    server = LocalServer(f"http://127.0.0.1:{port}", proc, log_file)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nlp-pipe serve exited with {proc.returncode}: {server.log()[-2000:]}")
            try:
                if httpx.get(server.url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nlp-pipe serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
        log_file.close()


@dataclass
class LocalServer:
    url: str
    process: subprocess.Popen[str]
    log_file: Any  # the server's stderr

    def log(self) -> str:
        self.log_file.seek(0)
        return str(self.log_file.read())

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, wait for the requests in flight to be answered; kill after `grace` seconds. The exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
