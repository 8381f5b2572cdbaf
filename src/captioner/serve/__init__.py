"""`captioner serve`: an HTTP API and a web page over one loaded captioner.

Modules: `settings` (the limits, no heavy imports), `command` (the CLI's `serve` subcommand; no
TensorFlow or FastAPI at import time), `batching` (the micro-batcher: one worker thread runs the
model on batches of queued images), `uploads` (content types, size limits, in-memory multipart),
`schemas` (the JSON answers, for the OpenAPI docs) and `app` (`create_app`, the FastAPI routes).
The web page is plain HTML, JavaScript and CSS in `static/`.

    from captioner.serve.app import create_app   # needs the 'serve' extra (FastAPI, uvicorn)
    app = create_app()                          # the default model; uvicorn.run(app) serves it
"""

from __future__ import annotations

from captioner.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
