"""`captioner serve`: the subcommand's flags (`add_parser`) and what it runs (`run`).

Importing this module imports neither TensorFlow nor FastAPI, so `captioner --help` stays fast;
`run` imports them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from captioner import defaults
from captioner.flags import number
from captioner.serve.settings import ServeSettings

log = logging.getLogger("captioner.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_parser(subparsers: Any) -> None:
    """Adds `captioner serve` and its flags to the CLI's subparsers."""
    d = ServeSettings()
    p = subparsers.add_parser(
        "serve",
        help="serve captions over HTTP: a JSON API and a web page (needs the 'serve' extra)",
        description="Serve the model over HTTP: POST /caption, POST /caption/batch, GET /health, GET /model, the web page at / and OpenAPI docs at /docs. "
        "Binds 127.0.0.1 unless --host is given.",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory or shipped model name, see `captioner models` (default: the shipped default model, or $CAPTIONER_MODEL)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=number(int, 0, maximum=65535), default=DEFAULT_PORT, help="TCP port (default: %(default)s; 0 picks a free one)")
    p.add_argument(
        "--max-batch", type=number(int, 1), default=d.max_batch, help="most images per model run; 1 runs one request at a time (default: %(default)s)"
    )
    p.add_argument(
        "--max-wait-ms",
        type=number(float, 0),
        default=d.max_wait_ms,
        help="how long the batch worker waits for more requests after the first arrives (default: %(default)s)",
    )
    p.add_argument("--max-queue", type=number(int, 1), default=d.max_queue, help="most images waiting for the model; more get 503 (default: %(default)s)")
    p.add_argument(
        "--max-upload-mb", type=number(float, 0, inclusive=False), default=d.max_upload_bytes / 2**20, help="most MiB per request body (default: %(default)g)"
    )
    p.add_argument("--max-images", type=number(int, 1), default=d.max_images, help="most images per /caption/batch request (default: %(default)s)")
    p.add_argument(
        "--max-beam-size",
        type=number(int, 1),
        default=d.max_beam_size,
        help=f"widest beam a request may ask for (default: %(default)s; the default beam is {defaults.BEAM_SIZE})",
    )
    p.add_argument(
        "--timeout",
        type=number(float, 0, inclusive=False),
        default=d.timeout_s,
        help="seconds a request may take before it is answered 503 (default: %(default)g)",
    )
    p.add_argument("--decode-threads", type=number(int, 1), default=d.decode_threads, help="threads decoding uploaded images (default: %(default)s)")
    p.add_argument(
        "--max-connections", type=number(int, 1), default=128, help="most concurrent connections; more are answered 503 by the server (default: %(default)s)"
    )
    p.add_argument("--no-warm-up", action="store_true", help="skip the warm-up run at start-up (the first request then traces the search)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_upload_bytes=max(1, int(args.max_upload_mb * 2**20)),
        max_images=args.max_images,
        max_beam_size=args.max_beam_size,
        timeout_s=args.timeout,
        decode_threads=args.decode_threads,
        warm_up=not args.no_warm_up,
    )


def run(args: argparse.Namespace) -> int:
    """Loads the model, then serves until interrupted. Returns the exit code."""
    try:
        import uvicorn

        from captioner.serve.app import create_app
    except ImportError as err:
        from captioner.errors import UserError

        raise UserError(f"captioner serve needs the 'serve' extra (pip install 'captioner[serve]'): {err}") from None
    from captioner.pipeline import Captioner

    settings = settings_from_args(args)
    captioner = Captioner(args.model)
    log.info("loaded %s (%s decoder, %s encoder)", captioner.model_dir.name, captioner.config.decoder.decoder, captioner.config.encoder)
    app = create_app(captioner, settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        limit_concurrency=args.max_connections,
        access_log=not args.no_access_log,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: other machines can reach this server (it has no authentication)", args.host)
    try:
        server.run()
    except SystemExit as stop:  # uvicorn exits when it cannot bind (its log says why)
        return int(stop.code) if isinstance(stop.code, int) else 1
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m captioner.serve.command [flags]`: the same as `captioner serve [flags]`."""
    from captioner.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m captioner.serve.command")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except UserError as err:
        log.error("captioner: error: %s", err)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
