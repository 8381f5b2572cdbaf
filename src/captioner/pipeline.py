"""Photo in, caption out: a trained model directory plus its encoder and search decoder."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from captioner import defaults
from captioner.artifacts import load_captioner
from captioner.decoding import Hypothesis, SearchDecoder
from captioner.defaults import default_model_dir, resolve_model
from captioner.encoders import get_encoder
from captioner.images import ImageError, load_ahead, load_image
from captioner.models.base import GRID
from captioner.objects import ImageNetTagger, ObjectSearch

__all__ = ["Captioner", "default_model_dir"]


class Captioner:
    """A ready-to-use captioner. Its defaults are the CLI's, so both give the same caption.

    Args:
        model_dir: a directory written by `captioner train`, or a shipped model's name
            ("flickr8k-merge"; see `captioner models`); default: the shipped default model, or
            `$CAPTIONER_MODEL`.
        name_objects: make captions name the object the encoder's ImageNet classifier is sure of
            (`captioner.objects`); None: its default (on). Encoders with an ImageNet head also
            put `tags` on every hypothesis, whatever this says.
    """

    def __init__(self, model_dir: str | os.PathLike | None = None, name_objects: bool | None = None) -> None:
        self.model_dir = resolve_model(model_dir)
        self.decoder, self.vocab, self.config = load_captioner(self.model_dir)
        self.encoder = get_encoder(self.config.encoder, weights=self.config.encoder_weights)
        tagger = ImageNetTagger.for_encoder(self.config.encoder, self.config.encoder_weights)
        self.search: SearchDecoder = SearchDecoder(self.decoder, self.vocab)
        if tagger is not None:
            self.search = ObjectSearch(self.decoder, self.vocab, tagger, **({} if name_objects is None else {"name_objects": name_objects}))

    @property
    def input_size(self) -> int:
        return self.encoder.info.input_size

    def load(self, source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
        """An image file or its bytes -> (S, S, 3) uint8 at the encoder's size."""
        return load_image(source, self.input_size, name=name)

    def features(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 images -> what the decoder takes: (B, D), or (B, L, D) for grid decoders."""
        if self.decoder.features == GRID:
            grid = self.encoder.encode(images, spatial=True)  # (B, g, g, D)
            return grid.reshape(len(grid), -1, grid.shape[-1])
        return self.encoder.encode(images)

    def caption_arrays(
        self, images: np.ndarray, beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, length_penalty: float = defaults.LENGTH_PENALTY
    ) -> list[list[Hypothesis]]:
        """(B, S, S, 3) uint8 images -> hypotheses per image, best first."""
        return self.search.caption(self.features(images), beam_size, num_captions, length_penalty)

    def caption(
        self, source: str | os.PathLike | bytes, beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, length_penalty: float = defaults.LENGTH_PENALTY
    ) -> list[Hypothesis]:
        """Hypotheses for one image file (or its bytes), best first."""
        return self.caption_arrays(self.load(source)[None], beam_size, num_captions, length_penalty)[0]

    def caption_files(
        self, paths: Iterable[Path], beam_size: int = defaults.BEAM_SIZE, num_captions: int = 1, batch_size: int = defaults.CAPTION_BATCH_SIZE
    ) -> Iterator[tuple[Path, list[Hypothesis] | ImageError]]:
        """Captions many files in batches, yielding (path, hypotheses) or (path, ImageError) in input order.

        The next batch is read from disk on a worker thread while this one is encoded.
        """
        paths = list(paths)
        batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

        def load_batch(batch: list[Path]) -> list[np.ndarray | ImageError]:
            loaded: list[np.ndarray | ImageError] = []
            for path in batch:
                try:
                    loaded.append(self.load(path))
                except ImageError as err:
                    loaded.append(err)
            return loaded

        for batch, loaded in load_ahead(batches, load_batch):
            good = [image for image in loaded if not isinstance(image, ImageError)]
            results = iter(self.caption_arrays(np.stack(good), beam_size, num_captions) if good else [])
            for path, image in zip(batch, loaded):
                yield path, image if isinstance(image, ImageError) else next(results)
