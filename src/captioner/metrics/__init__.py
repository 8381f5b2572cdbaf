"""Caption metrics computed the way papers compute them.

`score_captions` runs the coco-caption toolkit (the `pycocoevalcap` package): Stanford PTB
tokenisation, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and, on request, SPICE. Next to those it reports
NLTK's `corpus_bleu` ("nltk_BLEU-n"), the number most Keras tutorials print, so the two can be
compared. Both kinds of number are returned as fractions in [0, 1] (CIDEr-D can exceed 1);
`EvaluationResult.format_table` prints them x100 as papers do.

Java: coco-caption's tokenizer, METEOR and SPICE are Java programs. Without Java the captions are
tokenised by `ptb_tokenize_python`, a pure-Python re-implementation of what the Java tokenizer does to
captions, BLEU/ROUGE-L/CIDEr-D are still computed, and METEOR/SPICE are reported in
`EvaluationResult.skipped` with the reason. A METEOR or SPICE run that crashes or hangs is killed and
reported as skipped too; it never raises and never leaves a Java process behind.

SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads from the internet on first use. It
is never downloaded here: without those jars SPICE is skipped with the reason.

Modules: `scorers` (`score_captions`, METEOR/SPICE processes, NLTK BLEU), `tokenize` (PTB tokenisation,
Java and pure Python; NLTK cleaning), `result` (`EvaluationResult`), `cider` (`CiderD`: CIDEr-D with
document frequencies from a fixed corpus, for self-critical training; imported on first use since it
needs numpy).
"""

from __future__ import annotations

import importlib
from typing import Any

from captioner.metrics.result import COCO_METRICS, METRIC_ORDER, NLTK_METRICS, EvaluationResult
from captioner.metrics.scorers import JAVA_DISABLED, NLTK_WEIGHTS, SPICE_CORENLP_JARS, score_captions
from captioner.metrics.tokenize import (
    JAVA_NOT_FOUND,
    PTB_PUNCTUATIONS,
    TOKENIZER_JAVA,
    TOKENIZER_PYTHON,
    JavaNotFoundError,
    java_path,
    nltk_tokenize,
    ptb_tokenize_java,
    ptb_tokenize_python,
)

__all__ = [
    "COCO_METRICS",
    "JAVA_DISABLED",
    "JAVA_NOT_FOUND",
    "METRIC_ORDER",
    "NLTK_METRICS",
    "NLTK_WEIGHTS",
    "PTB_PUNCTUATIONS",
    "SPICE_CORENLP_JARS",
    "TOKENIZER_JAVA",
    "TOKENIZER_PYTHON",
    "CiderD",
    "EvaluationResult",
    "JavaNotFoundError",
    "java_path",
    "nltk_tokenize",
    "ptb_tokenize_java",
    "ptb_tokenize_python",
    "score_captions",
]


def __getattr__(name: str) -> Any:
    if name == "CiderD":
        return importlib.import_module("captioner.metrics.cider").CiderD
    raise AttributeError(f"module 'captioner.metrics' has no attribute {name!r}")
