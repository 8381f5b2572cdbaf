"""PTB tokenisation as coco-caption does it (Stanford's Java tokenizer, or a pure-Python copy of what
it does to captions), and the tutorial-style cleaning NLTK BLEU is computed on.

Both PTB tokenizers return one string of space-separated lower-case tokens per caption with
coco-caption's punctuation removed.
"""

from __future__ import annotations

import re
import shutil
import string
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from captioner.errors import UserError

__all__ = [
    "PTB_PUNCTUATIONS",
    "TOKENIZER_JAVA",
    "TOKENIZER_PYTHON",
    "JavaNotFoundError",
    "java_path",
    "nltk_tokenize",
    "ptb_tokenize_java",
    "ptb_tokenize_python",
]

TOKENIZER_JAVA = "ptb-java (stanford-corenlp-3.4.1, as coco-caption)"
TOKENIZER_PYTHON = "ptb-python (pure-Python re-implementation of coco-caption's PTB tokenisation)"

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, copied so the fallback works without the
# package (a test checks the two lists agree). Note the bracket tokens are upper-case here while the
# tokenizer runs with -lowerCase, so coco-caption never actually removes "-lrb-" and friends: we keep
# that behaviour.
PTB_PUNCTUATIONS = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]

JAVA_NOT_FOUND = "Java not found (no `java` on PATH)"


class JavaNotFoundError(UserError, RuntimeError):
    """Java was asked for (`use_java=True`, `ptb_tokenize_java`) but there is no `java` on PATH."""


def java_path() -> str | None:
    """The `java` executable on PATH, or None."""
    return shutil.which("java")


def _tail(data: bytes | str | None, limit: int = 300) -> str:
    """The last `limit` characters of a process's output, on one line."""
    if not data:
        return "(no output)"
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    data = " ".join(data.strip().split())
    return data if len(data) <= limit else "..." + data[-limit:]


# ---------------------------------------------------------------------------------------------
# PTB tokenisation


# Characters that the Java tokenizer treats as line ends: one would split a caption in two and shift
# every later caption against its image (coco-caption only replaces "\n").
_LINE_BREAKS = re.compile("[\r\n\u000b\u000c\u2028\u2029]")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _drop_punctuation(tokens: Iterable[str]) -> str:
    return " ".join(w for w in tokens if w not in _PUNCT_SET)


_PUNCT_SET = frozenset(PTB_PUNCTUATIONS)


def ptb_tokenize_java(captions: Sequence[str], *, java: str | None = None, timeout: float = 300.0) -> list[str]:
    """Tokenise with coco-caption's Stanford PTBTokenizer exactly as `PTBTokenizer.tokenize` does.

    Same jar, same flags (-preserveLines -lowerCase), same punctuation removal. Differences from the
    pycocoevalcap wrapper, none of which changes a token: the temporary file goes to a private
    temporary directory (not into site-packages), line-break characters inside a caption become
    spaces, and a line-count mismatch raises instead of silently misaligning captions.
    """
    java = java or java_path()
    if not java:
        raise JavaNotFoundError(JAVA_NOT_FOUND)
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    captions = [_one_line(c) for c in captions]
    if not captions:
        return []
    with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes(("\n".join(captions) + "\n").encode("utf-8"))
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(path)]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer exited with {proc.returncode}: {_tail(proc.stderr)}")
    lines = proc.stdout.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(captions):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [_drop_punctuation(line.rstrip().split(" ")) for line in lines]


# --- the pure-Python fallback ---------------------------------------------------------------
#
# Re-implements what Stanford CoreNLP 3.4.1's PTBTokenizer (-preserveLines -lowerCase) followed by
# coco-caption's punctuation filter does to captions. Checked token for token against the Java
# tokenizer on all 35,000 Flickr8k captions, on perturbed copies of them (raw-text punctuation,
# capitals, quotes, brackets, contractions) and on the edge cases in tests/test_evaluation.py. The
# PTB lexer has many more rules (URLs, e-mail, emoticons, SGML, odd symbols glued inside words); on
# such rare text the fallback can differ by a token.

# Abbreviations that keep their period whatever follows ("st. louis", "mr. smith", "etc.").
_ABBREV_ANY_CASE = frozenset(
    """
mr mrs ms dr drs jr sr st mt ft co cos inc ltd corp vs etc cf al esq bros dept univ assn ph.d
jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
ave rd blvd sq ct tel calif prof gen col capt sgt lt rev gov sen sens rep reps adm maj pvt
messrs hon mme mlle pres supt det ala ariz colo conn fla ga ind kan ky md mich minn mo mont
neb nev okla penn tenn va vt wis wyo
""".split()
)
# ... only when written with a capital ("Miss.", "Wash." but not "miss.", "wash.").
_ABBREV_CAPITALISED = frozenset("miss mass ark del ill la ore pa tex wash".split())
# ... only when a number follows ("no. 5").
_ABBREV_BEFORE_NUMBER = frozenset("no nos pp art fig figs ca".split())
_ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])+")  # u.s  t.v  a.m  ph.d (its last period stripped)
_APOSTROPHE_WORDS = frozenset("'s 're 've 'd 'll 'm 'n 'n' 'em 'cause 'til".split())
_CONTRACTION = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'d|'ll|'m)$")
_GLUED_CONTRACTION = re.compile(r"(?i)(?<=[a-z])(n't|'s|'re|'ve|'d|'ll|'m)(?=[-/])")
_SPLIT_WORDS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "lemme": 3, "gimme": 3}
_OPEN = {"(": "-LRB-", "[": "-LSB-", "{": "-LCB-"}
_CLOSE = {")": "-RRB-", "]": "-RSB-", "}": "-RCB-"}
_ALWAYS_SPLIT = set("()[]{}") | set("$%*+=^~|\\")
_UNICODE_MAP = {
    "\u201c": '"',
    "\u201d": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2013": " -- ",
    "\u2014": " -- ",
    "\u2015": " -- ",
    "\u2026": " ... ",
    "\u0085": " ... ",
    "\u00bd": "1/2",
    "\u00bc": "1/4",
    "\u00be": "3/4",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE_MAP)))


def _matched(match: re.Match[str] | None) -> str:
    """The matched text; the callers only search where a match is certain."""
    return match.group(0) if match else ""


def ptb_tokenize_python(captions: Sequence[str]) -> list[str]:
    """Tokenise captions like coco-caption's Java PTB tokenizer, in pure Python.

    Returns one string of space-separated lower-case tokens per caption, PTB punctuation removed:
    "A dog's toy, isn't it?" -> "a dog 's toy is n't it".
    """
    return [_drop_punctuation(_ptb_tokens(c)) for c in captions]


def _ptb_tokens(text: str) -> list[str]:
    text = _one_line(text).replace("&amp;", "&")
    text = _UNICODE_RE.sub(lambda m: _UNICODE_MAP[m.group(0)], text)
    chunks = text.split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        nxt = chunks[i + 1] if i + 1 < len(chunks) else ""
        tokens.extend(_chunk_tokens(chunk, nxt))
    return [t.lower() for t in tokens]


def _chunk_tokens(chunk: str, nxt: str) -> list[str]:
    # "--" and brackets and a few symbols always stand alone.
    out: list[str] = []
    for part in re.split(r"(-{2,}|\*+|\+(?!\d)|[()\[\]{}$%=^~|\\])", chunk):
        if not part:
            continue
        if part.startswith("--"):
            out.append("--")
        elif part in _OPEN:
            out.append(_OPEN[part])
        elif part in _CLOSE:
            out.append(_CLOSE[part])
        elif part in _ALWAYS_SPLIT or part.startswith("*"):
            out.append(part)
        else:
            out.extend(_word_tokens(part, nxt))
    return out


def _word_tokens(piece: str, nxt: str) -> list[str]:
    head: list[str] = []
    tail: list[str] = []
    # Leading punctuation.
    while piece:
        low = piece.lower()
        if piece[0] in '"`':
            head.append("``")
            piece = piece[1:].lstrip("`") if piece.startswith("``") else piece[1:]
        elif piece[0] == "'" and not _is_apostrophe_word(re.sub(r"[^\w']+$", "", low)):
            head.append("`")
            piece = piece[1:]
        elif piece[0] in ",;:!?":
            run = _matched(re.match(r"[!?]+|.", piece))
            head.append(run)
            piece = piece[len(run) :]
        elif piece.startswith("..."):
            head.append("...")
            piece = piece.lstrip(".")
        elif piece[0] == "." and not piece[1:2].isdigit():
            head.append(".")
            piece = piece[1:]
        elif piece[0] == "-" and len(piece) > 1 and not piece[1].isdigit():
            head.append("-")
            piece = piece[1:]
        elif (piece[0] == "#" and piece[1:2].isdigit()) or (piece[0] in "&_" and len(piece) > 1):
            head.append(piece[0])
            piece = piece[1:]
        elif piece[0] == "/" and len(piece) > 1:
            head.append("/")
            piece = piece[1:]
        else:
            break
    # Trailing punctuation (collected right to left).
    while piece:
        low = piece.lower()
        if low in _APOSTROPHE_WORDS:
            break
        last = piece[-1]
        if last == '"':
            tail.append("''")
            piece = piece[:-1]
        elif piece.endswith("''"):
            tail.append("''")
            piece = piece[:-2]
        elif last == "'":
            tail.append("'")
            piece = piece[:-1]
        elif last in "!?":
            run = _matched(re.search(r"[!?]+$", piece))
            tail.append(run)
            piece = piece[: -len(run)]
        elif last in ",;:" or (last in "/-&_#@" and len(piece) > 1):
            tail.append(last)
            piece = piece[:-1]
        elif piece.endswith(".."):
            dots = _matched(re.search(r"\.+$", piece))
            piece = piece[: -len(dots)]
            if _keeps_period(piece, nxt):  # "a..." -> "a. . ."
                piece, dots = piece + ".", dots[1:]
            tail.extend(["..."] if len(dots) >= 3 else ["."] * len(dots))
        elif last == ".":
            stem = piece[:-1]
            if _keeps_period(stem, nxt):
                break
            tail.append(".")
            piece = stem
        else:
            break
    return head + _split_word(piece) + tail[::-1]


def _is_apostrophe_word(low: str) -> bool:
    return (
        low in _APOSTROPHE_WORDS
        or re.match(r"'(s|re|ve|d|ll|m)[-/]", low) is not None
        or low.startswith(("'tis", "'twas"))
        or re.fullmatch(r"'\d0s", low) is not None
    )


def _keeps_period(stem: str, nxt: str) -> bool:
    if not stem or not stem.replace(".", "").isalpha():
        return False
    low = stem.lower()
    if len(stem) == 1 or _ACRONYM.fullmatch(stem):
        return True
    if low in _ABBREV_ANY_CASE:
        return True
    if low in _ABBREV_CAPITALISED and stem[0].isupper():
        return True
    return low in _ABBREV_BEFORE_NUMBER and nxt[:1].isdigit()


def _split_word(word: str) -> list[str]:
    if not word:
        return []
    low = word.lower()
    if low in _APOSTROPHE_WORDS or re.fullmatch(r"'\d0s", low):
        return [word]
    for prefix in ("'tis", "'twas"):
        if low == prefix:
            return [word[:2], word[2:]]
    if low in _SPLIT_WORDS:
        k = _SPLIT_WORDS[low]
        return [word[:k], word[k:]]
    # "a,b" -> "a , b", "a,1" -> "a ,1", but "1,000" and "2:30" stay; ";" always splits.
    m = re.search(r",(?!\d)|(?<!\d),(?=\d)|;|(?<!\d):|:(?!\d)", word)
    if m and 0 < m.start() < len(word) - 1:
        if m.group(0) == "," and word[m.end()].isdigit():
            return _split_word(word[: m.start()]) + [word[m.start() :]]
        return _split_word(word[: m.start()]) + [m.group(0)] + _split_word(word[m.end() :])
    m = re.match(r"(?i)'(s|re|ve|d|ll|m)(?=[-/].)", word)  # "'s-eye-view" -> "'s - eye-view"
    if m:
        return [m.group(0), word[m.end()]] + _split_word(word[m.end() + 1 :])
    # "a&b" -> "a & b" but "AT&T" stays.
    m = re.search(r"&", word)
    if m and 0 < m.start() < len(word) - 1 and not re.fullmatch(r"[A-Z]+&[A-Z]+", word):
        return _split_word(word[: m.start()]) + ["&"] + _split_word(word[m.end() :])
    # A contraction glued to the next word by "-" or "/" still splits: "it's-a" -> "it 's - a".
    m = _GLUED_CONTRACTION.search(word)
    if m and m.end() < len(word) - 1:
        return _split_word(word[: m.end()]) + [word[m.end()]] + _split_word(word[m.end() + 1 :])
    m = _CONTRACTION.match(word)
    if m and m.group(1).replace("'", "").isalnum():
        stem, suffix = m.group(1), m.group(2)
        if suffix.lower() == "n't" and stem[-1:] in "nN":
            return [word[:-2], "'", word[-1]]  # "inn't" -> "inn ' t", as the Java lexer does
        return [stem, suffix]
    return [word]


# ---------------------------------------------------------------------------------------------
# NLTK BLEU


def nltk_tokenize(text: str) -> list[str]:
    """Tutorial-style cleaning for NLTK BLEU: lower-case, ASCII punctuation deleted, split on
    whitespace, tokens that are not purely alphabetic dropped ("A dog's 2 toys." -> a dogs toys)."""
    text = text.lower().translate(_PUNCT_TABLE)
    return [w for w in text.split() if w.isalpha()]


_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
