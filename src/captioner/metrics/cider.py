"""CIDEr-D against a fixed corpus, for scoring many batches of captions (self-critical training).

coco-caption computes CIDEr-D's document frequencies from the images being scored, so a batch of 16
images gets idf weights from 16 images. A self-critical trainer wants the weights of its whole
training corpus, computed once, and then thousands of cheap calls:

    cider = CiderD(train_references)                  # image key -> raw reference captions
    mean, per_image = cider.score({"img1": "a dog runs on the grass", ...})

The scoring itself is pycocoevalcap's `CiderScorer` (same n-grams, clipping, Gaussian length penalty
with sigma 6, x10), given the corpus's document frequencies and log corpus size instead of the
batch's. With the corpus equal to the scored set the numbers equal coco-caption's CIDEr-D.
Captions are tokenised by `ptb_tokenize_python` (coco-caption's PTB tokenisation, no Java).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test

from captioner.errors import ArgumentError
from captioner.metrics.scorers import _preview
from captioner.metrics.tokenize import ptb_tokenize_python

__all__ = ["CiderD"]

logger = logging.getLogger(__name__)


class _DocumentFrequencies(dict):
    """n-gram -> number of corpus images whose references contain it; unseen n-grams read as 0 without
    being stored (pycocoevalcap's defaultdict would grow with every new n-gram a model samples)."""

    def __missing__(self, ngram: tuple[str, ...]) -> float:
        return 0.0


class _CorpusCiderScorer(CiderScorer):
    """pycocoevalcap's CiderScorer with the document frequencies and log corpus size of a fixed corpus.

    `compute_cider()` assigns `self.ref_len = log(len(self.crefs))`, the size of the batch; the
    property below ignores that assignment so the corpus's value is used.
    """

    def __init__(self, document_frequency: _DocumentFrequencies, log_corpus_size: float) -> None:
        super().__init__()
        self.document_frequency = document_frequency
        self._log_corpus_size = log_corpus_size

    @property
    def ref_len(self) -> float:
        return self._log_corpus_size

    @ref_len.setter
    def ref_len(self, value: float | None) -> None:
        pass


class CiderD:
    """CIDEr-D with document frequencies computed once from `references` (image key -> raw captions).

    `score` takes hypotheses for any subset of those keys; references are tokenised and cooked once.
    """

    def __init__(self, references: Mapping[str, Sequence[str]]) -> None:
        if not isinstance(references, Mapping) or not references:
            raise ArgumentError("CiderD needs a non-empty dict of image key -> reference captions")
        for key, refs in references.items():
            if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
                raise ArgumentError(f"references[{key!r}] must be a non-empty list of captions")
        keys = list(references)
        tokens = iter(ptb_tokenize_python([r for k in keys for r in references[k]]))
        corpus = CiderScorer()
        for key in keys:
            corpus.cook_append(None, [next(tokens) for _ in references[key]])
        corpus.compute_doc_freq()
        self._cooked_refs = dict(zip(keys, corpus.crefs))
        self._document_frequency = _DocumentFrequencies(corpus.document_frequency)
        self._log_corpus_size = float(np.log(float(len(keys))))  # as CiderScorer computes it
        logger.debug("CiderD corpus: %d images, %d distinct n-grams", len(keys), len(self._document_frequency))

    @property
    def num_images(self) -> int:
        """How many images the document frequencies come from."""
        return len(self._cooked_refs)

    def score(self, hypotheses: Mapping[str, str]) -> tuple[float, np.ndarray]:
        """(mean CIDEr-D, per-key scores in `hypotheses` order) of one caption per corpus image."""
        keys = list(hypotheses)
        if not keys:
            raise ArgumentError("nothing to score: hypotheses is empty")
        unknown = [k for k in keys if k not in self._cooked_refs]
        if unknown:
            raise ArgumentError(f"{len(unknown)} hypothesis key(s) not in the CiderD corpus: {_preview(unknown)}")
        for key in keys:
            if not isinstance(hypotheses[key], str):
                raise TypeError(f"hypotheses[{key!r}] must be one caption (str), got {type(hypotheses[key]).__name__}")
        scores = self.score_pairs(keys, [hypotheses[k] for k in keys])
        return float(scores.mean()), scores

    def score_pairs(self, keys: Sequence[str], captions: Sequence[str]) -> np.ndarray:
        """CIDEr-D of each caption against its key's references; a key may repeat (several samples)."""
        if len(keys) != len(captions):
            raise ArgumentError(f"{len(keys)} keys but {len(captions)} captions")
        scorer = _CorpusCiderScorer(self._document_frequency, self._log_corpus_size)
        scorer.crefs = [self._cooked_refs[k] for k in keys]
        scorer.ctest = [cook_test(t) for t in ptb_tokenize_python(list(captions))]
        return np.asarray(scorer.compute_cider(), dtype=np.float64)
