"""The JSON the service answers with, as pydantic models: they document the API in /docs.

The routes build plain dicts (keys that do not apply are left out rather than sent as null), and
these models describe them; `tests/test_serve.py` validates real answers against them.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Hypothesis(BaseModel):
    caption: str
    log_prob: float = Field(description="sum of the words' log-probabilities, end token included")
    score: float = Field(description="log_prob / length**length_penalty: what beam search ranks by")
    attention: list[list[float]] | None = Field(
        None, description="only with attention=true and an attention model: one row of grid*grid weights per word of the caption (row-major grid)"
    )


class Tag(BaseModel):
    tag: str = Field(description="the ImageNet class, e.g. 'macaw'")
    word: str = Field(description="what a caption calls it, e.g. 'parrot'")
    probability: float = Field(description="the encoder's ImageNet classifier's probability")


class Timing(BaseModel):
    decode: float = Field(description="ms decoding the uploaded file to pixels (a decoding thread)")
    queue: float = Field(description="ms waiting for the batch worker")
    encode: float = Field(description="ms of the image encoder for the whole batch this image ran in")
    search: float = Field(description="ms of the caption search for the whole batch this image ran in")
    total: float = Field(description="ms from the request's arrival to the answer (for /caption/batch: to the whole answer)")


class CaptionResult(BaseModel):
    image: str | None = Field(None, description="the uploaded file's name, when it had one")
    caption: str = Field(description="the best caption")
    captions: list[Hypothesis] = Field(description="the num_captions best, best first, with scores")
    tags: list[Tag] | None = Field(None, description="the encoder's ImageNet classes, most probable first (EfficientNet-Lite encoders; absent for others)")
    attention_grid: int | None = Field(None, description="only with attention=true and an attention model: the side of the square attention grid")
    beam_size: int
    num_captions: int
    batch_size: int = Field(description="how many images shared the model run")
    timing_ms: Timing


class ImageFailure(BaseModel):
    image: str | None = None
    error: str = Field(description="one line: why this image was not captioned")
    status: int = Field(description="the HTTP status this error would have on /caption (400 for a bad image)")


class BatchItem(CaptionResult):
    index: int = Field(description="position of the image in the request")


class BatchFailure(ImageFailure):
    index: int


class BatchResponse(BaseModel):
    results: list[BatchItem | BatchFailure] = Field(description="one per uploaded image, in order: a caption or an error")
    captioned: int
    failed: int
    timing_ms: dict[str, float]


class ErrorResponse(BaseModel):
    detail: str = Field(description="one line: what was wrong")


class Health(BaseModel):
    status: str = Field(description="'ok', or 'stalled' when the model has run one batch for longer than the timeout")
    model: str
    uptime_s: float
    worker: dict


class ModelInfo(BaseModel):
    model: str = Field(description="the model directory's name")
    decoder: str
    encoder: str
    input_size: int
    attention: bool = Field(description="whether captions come with attention maps")
    grid_size: int | None
    tags: bool = Field(description="whether the model predicts tags")
    vocab_size: int
    max_length: int
    captioner_version: str
    model_captioner_version: str | None = Field(description="the captioner version that trained the model")
    dataset: str | None
    defaults: dict
    limits: dict
    batching: dict
