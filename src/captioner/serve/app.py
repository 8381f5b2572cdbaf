"""The HTTP service: FastAPI routes over one loaded `Captioner`, a micro-batcher and the web page.

    POST /caption         one image (multipart field `image`, or the bytes with an image Content-Type)
    POST /caption/batch   several images (multipart, one `images` field each); per-image results or errors
    GET  /health          liveness and the batch worker's counters
    GET  /model           what is loaded, the defaults and the limits
    GET  /                the web page (static/index.html); /static/* its script and style
    GET  /docs, /redoc    OpenAPI docs (FastAPI's, their scripts served from here, no CDN); /openapi.json the schema

Work and where it runs: the event loop only moves bytes. Multipart parsing runs on a worker thread,
decoding on `decode_threads` threads, the model on the micro-batcher's single thread.

Status codes: 400 a user's mistake (a file that is not an image, truncated, a decompression bomb,
a bad parameter; `captioner.errors.UserError`, whose message is the one-line `detail`); 413 a body
over the size limit (by Content-Length, or counted while it streams in) or too many images; 415 a
content type that is neither a multipart form nor an image; 503 when the queue is full or a
request took longer than the timeout; 500 only for a bug, which is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from captioner import __version__, defaults
from captioner.errors import ArgumentError, UserError
from captioner.images import load_image
from captioner.serve import schemas
from captioner.serve.batching import BatchResult, MicroBatcher, Overloaded
from captioner.serve.settings import IMAGE_CONTENT_TYPES, ServeSettings
from captioner.serve.uploads import RequestError, read_upload

log = logging.getLogger("captioner.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The web page talks to this server only: no CDN, no web font, no request anywhere else.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "not an image, truncated, a decompression bomb, or a bad parameter"},
    413: {"model": schemas.ErrorResponse, "description": "upload over the size limit, or too many images"},
    415: {"model": schemas.ErrorResponse, "description": "neither multipart/form-data nor an image content type"},
    500: {"model": schemas.ErrorResponse, "description": "a bug (logged on the server)"},
    503: {"model": schemas.ErrorResponse, "description": "queue full, or the request took longer than the timeout"},
}

_PARAMS_FORM = {
    "beam_size": {"type": "integer", "description": "beam width; 1 is greedy (also a query parameter)"},
    "num_captions": {"type": "integer", "description": "how many of the best captions to return (also a query parameter)"},
    "attention": {"type": "boolean", "description": "include attention maps (attention models only; also a query parameter)"},
}

_CAPTION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"], "properties": {"image": {"type": "string", "format": "binary"}, **_PARAMS_FORM}}
            },
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in ("image/jpeg", "image/png", "image/webp", "image/bmp")},
        },
    }
}

_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}, **_PARAMS_FORM},
                }
            }
        },
    }
}


class SearchParams:
    """A request's beam size, number of captions and attention flag, checked (`ArgumentError`)."""

    def __init__(self, values: dict[str, str | None], settings: ServeSettings):
        num_captions = _integer(values, "num_captions")
        beam_size = _integer(values, "beam_size")
        self.num_captions = 1 if num_captions is None else num_captions
        if self.num_captions < 1:
            raise ArgumentError(f"num_captions must be at least 1, got {self.num_captions}")
        self.beam_size = max(self.num_captions, defaults.BEAM_SIZE) if beam_size is None else beam_size
        if self.beam_size < 1:
            raise ArgumentError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.beam_size > settings.max_beam_size:
            raise ArgumentError(f"beam_size must be at most {settings.max_beam_size}, got {self.beam_size}")
        if self.num_captions > self.beam_size:
            raise ArgumentError(f"num_captions must be between 1 and the beam size ({self.beam_size}), got {self.num_captions}")
        self.attention = _boolean(values, "attention")


def _integer(values: dict[str, str | None], name: str) -> int | None:
    text = values.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise ArgumentError(f"{name} must be a whole number, got {text[:40]!r}") from None


def _boolean(values: dict[str, str | None], name: str) -> bool:
    text = (values.get(name) or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ArgumentError(f"{name} must be true or false, got {text[:40]!r}")


def display_name(filename: str | None) -> str | None:
    """An uploaded file's name as the answer shows it: its last path component, no control characters, at most 200."""
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()[:200]
    return name or None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class CaptionService:
    """The loaded captioner, its micro-batcher and the decoding threads, shared by every request."""

    def __init__(self, captioner: Any, settings: ServeSettings):
        self.captioner = captioner
        self.settings = settings
        self.batcher = MicroBatcher(captioner, settings.max_batch, settings.max_wait_ms, settings.max_queue, settings.length_penalty)
        self.pool: ThreadPoolExecutor | None = None
        self.started = time.monotonic()
        grid = getattr(captioner.encoder.info, "grid_size", None)
        self.attends = bool(captioner.search.attends)
        self.grid_size = grid if self.attends else None

    def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.settings.decode_threads, thread_name_prefix="captioner-decode")
        self.batcher.start()
        self.started = time.monotonic()

    def stop(self) -> None:
        self.batcher.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def warm_up(self) -> None:
        """Traces the compiled search (greedy and beam) and runs the encoder on a full batch of blank images.

        The full batch makes the memory allocator reach the size the largest batch needs now, so
        the server's resident memory stays flat under load instead of creeping up to it.
        """
        started = time.perf_counter()
        size = self.captioner.input_size
        features = self.captioner.features(np.full((self.settings.max_batch, size, size, 3), 127, np.uint8))
        self.captioner.search.caption(features[:1], 1, 1, self.settings.length_penalty)
        self.captioner.search.caption(features, defaults.BEAM_SIZE, 1, self.settings.length_penalty)
        log.info("model warmed up in %.1f s", time.perf_counter() - started)

    # --- one image ---------------------------------------------------------------------------

    async def caption(self, data: bytes, name: str, params: SearchParams) -> tuple[BatchResult, float]:
        """Decodes (decoding thread) and captions (batch worker) one upload: (result, decode seconds).

        Raises:
            UserError: the bytes are not a usable image (`ImageError`).
            Overloaded: the queue is full.
        """
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        image = await loop.run_in_executor(self.pool, functools.partial(load_image, data, self.captioner.input_size, name=name))
        decoded = time.perf_counter() - started
        result = await asyncio.wrap_future(self.batcher.submit(image, params.beam_size, params.num_captions))
        return result, decoded

    def result_json(self, name: str | None, result: BatchResult, decode_s: float, params: SearchParams, total_s: float) -> dict:
        hypotheses = []
        for h in result.hypotheses:
            item: dict[str, Any] = {"caption": h.caption, "log_prob": round(h.log_prob, 4), "score": round(h.score, 4)}
            if params.attention and h.attention is not None:
                item["attention"] = np.round(np.asarray(h.attention, np.float64), 4).tolist()
            hypotheses.append(item)
        answer: dict[str, Any] = {"image": name, "caption": result.hypotheses[0].caption, "captions": hypotheses}
        tags = self.tags(result)
        if tags is not None:
            answer["tags"] = tags
        if params.attention and self.attends:
            cells = next((len(h.attention[0]) for h in result.hypotheses if h.attention is not None and len(h.attention)), None)
            answer["attention_grid"] = self.grid_size or (math.isqrt(cells) if cells else None)
        answer.update(beam_size=params.beam_size, num_captions=params.num_captions, batch_size=result.batch_size)
        answer["timing_ms"] = {
            "decode": _ms(decode_s),
            "queue": round(result.queue_ms, 2),
            "encode": round(result.encode_ms, 2),
            "search": round(result.search_ms, 2),
            "total": _ms(total_s),
        }
        return answer

    def tags(self, result: BatchResult) -> list[dict] | None:
        """The image's ImageNet tags, [{"tag": "macaw", "word": "parrot", "probability": 0.83}, ...], most
        probable first, when the encoder has its classifier (`captioner.objects`); None (the key is left out) otherwise."""
        tags = result.hypotheses[0].tags if result.hypotheses else None
        return None if tags is None else [tag.to_json() for tag in tags]

    def model_info(self) -> dict:
        config = self.captioner.config
        dataset = (config.training or {}).get("dataset") or {}
        return {
            "model": self.captioner.model_dir.name,
            "decoder": config.decoder.decoder,
            "encoder": config.encoder,
            "input_size": int(self.captioner.input_size),
            "attention": self.attends,
            "grid_size": self.grid_size,
            "tags": getattr(self.captioner.search, "tagger", None) is not None,
            "vocab_size": int(config.decoder.vocab_size),
            "max_length": int(config.decoder.max_length),
            "captioner_version": __version__,
            "model_captioner_version": getattr(config, "captioner_version", None),
            "dataset": dataset.get("name") if isinstance(dataset, dict) else None,
            "defaults": {"beam_size": defaults.BEAM_SIZE, "num_captions": 1, "length_penalty": self.settings.length_penalty},
            "limits": {
                "max_beam_size": self.settings.max_beam_size,
                "max_upload_bytes": self.settings.max_upload_bytes,
                "max_images": self.settings.max_images,
                "timeout_s": self.settings.timeout_s,
                "image_types": sorted(IMAGE_CONTENT_TYPES),
            },
            "batching": {"max_batch": self.settings.max_batch, "max_wait_ms": self.settings.max_wait_ms, "max_queue": self.settings.max_queue},
        }


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _bug(request: Request, err: BaseException) -> JSONResponse:
    log.error("internal error answering %s %s: %s: %s", request.method, request.url.path, type(err).__name__, _one_line(err), exc_info=err)
    return _error(500, "internal error (a bug; the server log has the details)")


class _PageHeaders:
    """Pure ASGI middleware: the web page and its files get a strict Content-Security-Policy."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/" and not path.startswith("/static/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in PAGE_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(captioner: Any = None, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving `captioner` (default: a `Captioner()` of the default model).

    The batch worker and the decoding threads start with the application's lifespan (uvicorn, or
    `with TestClient(app)`), after a warm-up run when `settings.warm_up`.
    """
    if captioner is None:
        from captioner.pipeline import Captioner

        captioner = Captioner()
    settings = settings or ServeSettings()
    service = CaptionService(captioner, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.warm_up:
            await asyncio.to_thread(service.warm_up)
        service.start()
        try:
            yield
        finally:
            service.stop()

    # FastAPIOffline serves Swagger UI and ReDoc from files in its package: /docs needs no CDN.
    app = FastAPIOffline(
        title="captioner",
        version=__version__,
        description="Image captioning: a CNN encoder and an LSTM decoder. Upload a photo, get its caption. The web page is at /.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_PageHeaders)
    max_parts = settings.max_images + 8

    async def caption_images(request: Request, query: dict[str, str | None], batch: bool) -> Response:
        started = time.perf_counter()
        try:
            fields = ("images", "image") if batch else ("image",)
            upload = await read_upload(request, settings.max_upload_bytes, fields, max_parts, allow_raw=not batch)
            params = SearchParams({**upload.fields, **{k: v for k, v in query.items() if v is not None}}, settings)
            if not upload.files:
                if batch:
                    raise RequestError(400, "no images: send one multipart 'images' file field per image")
                raise RequestError(400, "no image: send a multipart 'image' file field, or the image bytes with an image Content-Type")
            if not batch and len(upload.files) > 1:
                raise RequestError(400, f"{len(upload.files)} images in one request: /caption takes one; use /caption/batch for several")
            if len(upload.files) > settings.max_images:
                raise RequestError(413, f"too many images ({len(upload.files)}; limit {settings.max_images})")
            names = [display_name(part.filename) for part in upload.files]
            labels = [name or ("upload" if not batch else f"image {i + 1}") for i, name in enumerate(names)]
            try:
                async with asyncio.timeout(settings.timeout_s):
                    outcomes = await asyncio.gather(
                        *(service.caption(part.data, label, params) for part, label in zip(upload.files, labels)), return_exceptions=True
                    )
            except TimeoutError:
                log.warning("%s %s timed out after %g s", request.method, request.url.path, settings.timeout_s)
                raise RequestError(503, f"timed out after {settings.timeout_s:g} s; the server is busy, try again", {"Retry-After": "1"}) from None
            total = time.perf_counter() - started
            if not batch:
                outcome = outcomes[0]
                if isinstance(outcome, BaseException):
                    raise outcome
                result, decode_s = outcome
                return JSONResponse(service.result_json(names[0], result, decode_s, params, total))
            results: list[dict] = []
            for index, (name, outcome) in enumerate(zip(names, outcomes)):
                if isinstance(outcome, UserError):
                    results.append({"index": index, "image": name, "error": _one_line(outcome), "status": 400})
                elif isinstance(outcome, Overloaded):
                    results.append({"index": index, "image": name, "error": _one_line(outcome), "status": 503})
                elif isinstance(outcome, BaseException):
                    _bug(request, outcome)
                    results.append({"index": index, "image": name, "error": "internal error (a bug; the server log has the details)", "status": 500})
                else:
                    result, decode_s = outcome
                    results.append({"index": index, **service.result_json(name, result, decode_s, params, total)})
            failed = sum("error" in r for r in results)
            body = {"results": results, "captioned": len(results) - failed, "failed": failed, "timing_ms": {"total": _ms(time.perf_counter() - started)}}
            return JSONResponse(body)
        except RequestError as err:
            return _error(err.status, err.detail, err.headers)
        except UserError as err:
            return _error(400, _one_line(err))
        except Overloaded as err:
            return _error(503, _one_line(err), {"Retry-After": "1"})
        except Exception as err:
            return _bug(request, err)

    @app.post(
        "/caption",
        summary="Caption one image",
        response_model=None,
        responses={200: {"model": schemas.CaptionResult}, **_ERRORS},
        openapi_extra=_CAPTION_BODY,
    )
    async def caption(
        request: Request,
        beam_size: str | None = Query(None, description=f"beam width; 1 is greedy (default {defaults.BEAM_SIZE}, at most {settings.max_beam_size})"),
        num_captions: str | None = Query(None, description="how many of the best captions to return (default 1)"),
        attention: str | None = Query(None, description="true: include per-word attention maps (attention models only)"),
    ) -> Response:
        """One image: a multipart form with an `image` file field, or the image bytes with Content-Type image/jpeg, image/png, image/bmp or image/webp."""
        return await caption_images(request, {"beam_size": beam_size, "num_captions": num_captions, "attention": attention}, batch=False)

    @app.post(
        "/caption/batch",
        summary="Caption several images",
        response_model=None,
        responses={200: {"model": schemas.BatchResponse}, **_ERRORS},
        openapi_extra=_BATCH_BODY,
    )
    async def caption_batch(
        request: Request,
        beam_size: str | None = Query(None, description=f"beam width; 1 is greedy (default {defaults.BEAM_SIZE}, at most {settings.max_beam_size})"),
        num_captions: str | None = Query(None, description="how many of the best captions to return per image (default 1)"),
        attention: str | None = Query(None, description="true: include per-word attention maps (attention models only)"),
    ) -> Response:
        """Several images, one `images` file field each: a result or an error per image, in order (an image that cannot be read does not fail the others)."""
        return await caption_images(request, {"beam_size": beam_size, "num_captions": num_captions, "attention": attention}, batch=True)

    @app.get("/health", summary="Liveness", response_model=None, responses={200: {"model": schemas.Health}, 503: {"model": schemas.Health}})
    async def health() -> JSONResponse:
        """'ok' while the batch worker runs and no batch has taken longer than the timeout."""
        stalled = not service.batcher.running or service.batcher.busy_for() > settings.timeout_s
        body = {
            "status": "stalled" if stalled else "ok",
            "model": captioner.model_dir.name,
            "uptime_s": round(time.monotonic() - service.started, 1),
            "worker": service.batcher.stats(),
        }
        return JSONResponse(body, status_code=503 if stalled else 200)

    @app.get("/model", summary="The loaded model", response_model=None, responses={200: {"model": schemas.ModelInfo}})
    async def model() -> JSONResponse:
        """Decoder, encoder, vocabulary size, versions, defaults and limits."""
        return JSONResponse(service.model_info())

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
