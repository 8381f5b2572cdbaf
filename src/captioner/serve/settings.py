"""What `captioner serve` can be told: one dataclass, shared by the command line and `create_app`.

Importing this module imports nothing heavy (no TensorFlow, no FastAPI), so `captioner --help`
can show the defaults.
"""

from __future__ import annotations

import dataclasses

from captioner import defaults

# The content types a raw upload (`POST /caption` with the image as the whole body) may have:
# the formats `captioner.images.load_image` reads, under their registered and common names.
IMAGE_CONTENT_TYPES: frozenset[str] = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/bmp", "image/x-bmp", "image/x-ms-bmp", "image/webp"}
)


@dataclasses.dataclass
class ServeSettings:
    """Limits and batching of the HTTP service (the flags of `captioner serve`).

    Attributes:
        max_batch: most images one model run takes; 1 runs every request on its own. 16 because
            on the 2-core machine measured the beam search, which drops images as they finish,
            costs least per image from batches of about 16 (99 captions/s at 8, 138 at 16, 135 at
            32: `benchmarks/decode_speed.py --model flickr8k-attention --beams 5 --batch-sizes 8
            16 32 --batches 8`), while the encoder (on LiteRT, two images per call) costs the same
            per image at any batch.
        max_wait_ms: how long the batch worker waits for more requests after the first one arrives.
        max_queue: most images waiting for the model; more are refused with 503 at once.
        max_upload_bytes: most bytes one request body may have (413 above it).
        max_images: most images one `POST /caption/batch` may carry (413 above it).
        max_beam_size: the widest beam a request may ask for (400 above it).
        timeout_s: a request whose image decoding, queueing and model run take longer is answered
            503 (its images are dropped from the queue if the model has not taken them yet).
        decode_threads: threads that decode uploaded images (never the event loop).
        warm_up: run a full batch of blank images through the model at start-up, so the first
            request does not pay for tracing the compiled search, nor the first full batch for memory.
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_upload_bytes: int = 20 * 2**20
    max_images: int = 16
    max_beam_size: int = 10
    timeout_s: float = 30.0
    decode_threads: int = 2
    warm_up: bool = True
    length_penalty: float = defaults.LENGTH_PENALTY

    def __post_init__(self) -> None:
        from captioner.errors import check_positive

        for name in ("max_batch", "max_queue", "max_upload_bytes", "max_images", "max_beam_size", "timeout_s", "decode_threads"):
            check_positive(name, getattr(self, name), allow_none=False)
        check_positive("max_wait_ms", self.max_wait_ms, allow_none=False, allow_zero=True)
