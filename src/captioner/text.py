"""Caption text cleaning, shared by the dataset readers and the vocabulary.

This module imports nothing from the rest of the package, so code that only needs to clean
captions (the vocabulary, a web service) does not load any dataset reader.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_caption", "has_words"]

# Punctuation and symbols: everything that is neither a word character nor whitespace. For
# ASCII text this is exactly `string.punctuation`, as in the classic tutorial.
_NOT_WORD = re.compile(r"[^\w\s]|_")


def clean_caption(text: str) -> str:
    """Cleans a caption the classic tutorial's way, but keeps one-letter words.

    Lower-cases, deletes punctuation inside tokens ("tri-colored" -> "tricolored", "dog's" ->
    "dogs"), then drops every token that is not purely alphabetic ("2", "3rd"). One-letter words
    such as "a" are kept: the tutorial dropped them, which costs BLEU against human references.
    Cleaning is idempotent, and the special tokens ("<start>", ...) can never come out of it.

    Args:
        text: a raw caption.

    Returns:
        The cleaned words joined by single spaces, or "" if nothing is left.
    """
    if not text.isascii():
        # Compose accents so "é" written as e + combining accent stays one letter.
        text = unicodedata.normalize("NFC", text)
    words = _NOT_WORD.sub("", text.lower()).split()
    return " ".join([w for w in words if w.isalpha()])


def has_words(text: str) -> bool:
    """Whether `clean_caption(text)` is non-empty, without building it (loads check 100,000s).

    Args:
        text: a raw caption.

    Returns:
        True if at least one word survives cleaning.
    """
    # Nearly every caption has a plain word early on; only the rest need the punctuation pass.
    return any(w.isalpha() for w in text.split()) or any(w.isalpha() for w in _NOT_WORD.sub("", text).split())
