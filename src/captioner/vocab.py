"""The caption vocabulary: words <-> integer ids, saved as JSON.

Ids 0-3 are the special tokens `PAD`, `START`, `END` and `UNK`. Their angle brackets are
punctuation, which `clean_caption` deletes, so no cleaned caption word can ever equal one of them.
Id 0 being padding matches Keras masking (`mask_zero=True`) and `pad_sequences`.

Captions are cleaned (`captioner.data.clean_caption`) before they are counted or encoded, so raw
and already-cleaned captions give the same ids.

The class also offers the slice of the Keras `Tokenizer` interface that the classic tutorial's
`generate_desc` uses (`word_index`, `index_word`, `texts_to_sequences`); there the tutorial's
"startseq" and "endseq" markers are read as `START` and `END`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from captioner.atomic import write_json
from captioner.errors import FileError
from captioner.text import clean_caption

__all__ = ["END", "PAD", "SPECIALS", "START", "UNK", "Vocabulary", "VocabularyError"]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

# The marker words of the classic tutorial, accepted by `texts_to_sequences`.
_TUTORIAL_ALIASES = {"startseq": START, "endseq": END}

_FILE_FORMAT = "captioner-vocabulary"
_FILE_VERSION = 1


class VocabularyError(FileError):
    """A vocabulary file that cannot be used; `str(e)` is "<path>: <problem>"."""


class Vocabulary:
    """An ordered word list with the four special tokens first.

    Attributes:
        id_to_word: the words in id order.
        word_to_id: word -> id.
    """

    def __init__(self, words: Sequence[str]) -> None:
        """Builds a vocabulary from its full index order.

        Args:
            words: every word in id order. If it does not start with the four special tokens
                they are put in front (so a plain word list works too).

        Raises:
            ValueError: a word is repeated, empty or not a string, or a special token is out of
                place.
        """
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            words = [*SPECIALS, *words]
        for position, word in enumerate(words):
            if not isinstance(word, str) or not word or word != word.strip() or " " in word:
                raise ValueError(f"vocabulary word {position} is not a single word: {word!r}")
        word_to_id = {w: i for i, w in enumerate(words)}
        if len(word_to_id) != len(words):
            repeated = sorted(w for w, n in Counter(words).items() if n > 1)
            raise ValueError(f"vocabulary words repeated: {', '.join(map(repr, repeated[:5]))}")
        self.id_to_word: list[str] = words
        self.word_to_id: dict[str, int] = word_to_id
        self._index_word: dict[int, str] | None = None

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Counts the words of the captions (cleaned first) and keeps the frequent ones.

        Args:
            captions: raw or cleaned captions.
            min_count: words seen fewer times than this are left out (they encode as `UNK`).

        Returns:
            The vocabulary, words ordered by count (most frequent first), ties alphabetically,
            so the same captions always give the same ids.
        """
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(clean_caption(caption).split())
        return cls.from_counts(counts, min_count)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_count: int = 1) -> Vocabulary:
        """`build` from words already counted: the words seen at least `min_count` times, by count, ties alphabetically."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, not {min_count}")
        return cls(sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)))

    # --- ids --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.id_to_word)

    def __contains__(self, word: object) -> bool:
        return word in self.word_to_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.id_to_word == other.id_to_word

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    def encode(self, caption: str, add_special: bool = True) -> list[int]:
        """The ids of a caption's cleaned words; unknown words become `UNK`.

        Args:
            caption: raw or cleaned text.
            add_special: wrap the ids in `START` ... `END`.
        """
        get, unk = self.word_to_id.get, self.unk_id
        ids = [get(w, unk) for w in clean_caption(caption).split()]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of an id sequence: stops at `END`, skips `PAD` and `START`.

        Raises:
            ValueError: an id is outside the vocabulary.
        """
        words = []
        for i in ids:
            i = int(i)  # numpy integers from a model's argmax
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            if not 0 <= i < len(self.id_to_word):
                raise ValueError(f"id {i} is outside a vocabulary of {len(self)} words")
            words.append(self.id_to_word[i])
        return " ".join(words)

    # --- the Keras Tokenizer interface used by the classic tutorial --------------------------

    @property
    def word_index(self) -> dict[str, int]:
        """Word -> id, as `keras.preprocessing.text.Tokenizer.word_index` (0 is padding here too)."""
        return self.word_to_id

    @property
    def index_word(self) -> dict[int, str]:
        """Id -> word, as `Tokenizer.index_word`."""
        # Built once: the tutorial's decoding loop reads it for every generated word.
        if self._index_word is None or len(self._index_word) != len(self.id_to_word):
            self._index_word = dict(enumerate(self.id_to_word))
        return self._index_word

    def texts_to_sequences(self, texts: Iterable[str]) -> list[list[int]]:
        """Ids for each text, without adding special tokens.

        Special tokens written in the text ("<start>") and the tutorial's "startseq"/"endseq"
        map to their ids; other words are cleaned and unknown ones become `UNK`.
        """
        return [self._text_ids(text) for text in texts]

    def _text_ids(self, text: str) -> list[int]:
        ids = []
        for token in text.split():
            token = token.lower()
            special = _TUTORIAL_ALIASES.get(token, token)
            if special in SPECIALS:
                ids.append(self.word_to_id[special])
            else:
                ids.extend(self.encode(token, add_special=False))
        return ids

    # --- files --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON, atomically (a reader never sees half a file)."""
        write_json(path, {"format": _FILE_FORMAT, "version": _FILE_VERSION, "words": self.id_to_word})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary saved by `save`.

        Raises:
            VocabularyError: the file is missing, not JSON, or not a vocabulary.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabularyError(path, "vocabulary file not found") from None
        except IsADirectoryError:
            raise VocabularyError(path, "is a directory, expected a vocabulary JSON file") from None
        except UnicodeDecodeError:
            raise VocabularyError(path, "not a vocabulary file (not UTF-8 text)") from None
        except json.JSONDecodeError as e:
            raise VocabularyError(path, f"not a vocabulary file (invalid JSON at line {e.lineno}: {e.msg})") from None
        except OSError as e:
            raise VocabularyError(path, f"cannot read: {e.strerror or e}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FILE_FORMAT or not isinstance(doc.get("words"), list):
            raise VocabularyError(path, f'not a vocabulary file (expected {{"format": "{_FILE_FORMAT}", "words": [...]}})')
        if doc.get("version") != _FILE_VERSION:
            raise VocabularyError(path, f"unsupported vocabulary file version {doc.get('version')!r}")
        words = doc["words"]
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise VocabularyError(path, f"corrupt vocabulary: it must start with {', '.join(SPECIALS)}")
        try:
            return cls(words)
        except ValueError as e:
            raise VocabularyError(path, f"corrupt vocabulary: {e}") from None
