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
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import string
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "EvaluationResult",
    "score_captions",
    "ptb_tokenize_python",
    "ptb_tokenize_java",
    "nltk_tokenize",
    "java_path",
    "PTB_PUNCTUATIONS",
    "METRIC_ORDER",
    "TOKENIZER_JAVA",
    "TOKENIZER_PYTHON",
]

# The order metrics are reported in (tables, JSON).
COCO_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE"]
NLTK_METRICS = ["nltk_BLEU-1", "nltk_BLEU-2", "nltk_BLEU-3", "nltk_BLEU-4"]
METRIC_ORDER = COCO_METRICS + NLTK_METRICS

TOKENIZER_JAVA = "ptb-java (stanford-corenlp-3.4.1, as coco-caption)"
TOKENIZER_PYTHON = "ptb-python (pure-Python re-implementation of coco-caption's PTB tokenisation)"

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, copied so the fallback works without the
# package (a test checks the two lists agree). Note the bracket tokens are upper-case here while the
# tokenizer runs with -lowerCase, so coco-caption never actually removes "-lrb-" and friends: we keep
# that behaviour.
PTB_PUNCTUATIONS = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                    ".", "?", "!", ",", ":", "-", "--", "...", ";"]

# NLTK corpus_bleu weights as tutorials quote them; no smoothing.
NLTK_WEIGHTS = {
    "nltk_BLEU-1": (1.0, 0.0, 0.0, 0.0),
    "nltk_BLEU-2": (0.5, 0.5, 0.0, 0.0),
    "nltk_BLEU-3": (1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0),
    "nltk_BLEU-4": (0.25, 0.25, 0.25, 0.25),
}

JAVA_NOT_FOUND = "Java not found (no `java` on PATH)"
JAVA_DISABLED = "Java not used (use_java=False)"


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class EvaluationResult:
    """Scores of one set of generated captions against the references.

    `metrics` holds raw fractions (BLEU 0.515, not 51.5); `skipped` maps a metric that could not be
    computed to the reason; `tokenizer` says which PTB tokenisation the coco metrics saw.
    """

    metrics: dict[str, float]
    skipped: dict[str, str]
    tokenizer: str
    num_images: int
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {k: float(v) for k, v in _ordered(self.metrics).items()},
            "skipped": dict(_ordered(self.skipped)),
            "tokenizer": self.tokenizer,
            "num_images": int(self.num_images),
            "notes": list(self.notes),
            "timings": {k: round(float(v), 3) for k, v in self.timings.items()},
            **({"per_image": self.per_image} if self.per_image is not None else {}),
        }

    def to_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def format_table(self, title: str = "", decimals: int = 1) -> str:
        """An aligned plain-text table, scores x100 as papers print them."""
        names = [m for m in METRIC_ORDER if m in self.metrics or m in self.skipped]
        names += [m for m in list(self.metrics) + list(self.skipped) if m not in names]
        width = max([len("metric"), *(len(n) for n in names)])
        cells = []
        for name in names:
            if name in self.metrics:
                cells.append((name, f"{100.0 * self.metrics[name]:.{decimals}f}", ""))
            else:
                cells.append((name, "-", f"skipped: {self.skipped[name]}"))
        score_width = max([len("x100"), *(len(c[1]) for c in cells)])
        lines = []
        if title:
            lines += [title, "=" * len(title)]
        lines.append(f"{'metric':<{width}}  {'x100':>{score_width}}")
        lines.append(f"{'-' * width}  {'-' * score_width}")
        for name, score, extra in cells:
            lines.append(f"{name:<{width}}  {score:>{score_width}}" + (f"  {extra}" if extra else ""))
        lines.append(f"images: {self.num_images}; tokenizer: {self.tokenizer}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def _ordered(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: d[k] for k in METRIC_ORDER if k in d}
    out.update({k: v for k, v in d.items() if k not in out})
    return out


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


def java_path() -> str | None:
    """The `java` executable on PATH, or None."""
    return shutil.which("java")


def _pycocoevalcap_dir() -> Path:
    import pycocoevalcap.bleu.bleu  # noqa: F401  (pycocoevalcap has no top-level __init__)

    return Path(pycocoevalcap.bleu.bleu.__file__).resolve().parent.parent


def ptb_tokenize_java(captions: Sequence[str], *, java: str | None = None, timeout: float = 300.0) -> list[str]:
    """Tokenise with coco-caption's Stanford PTBTokenizer exactly as `PTBTokenizer.tokenize` does.

    Same jar, same flags (-preserveLines -lowerCase), same punctuation removal. Differences from the
    pycocoevalcap wrapper, none of which changes a token: the temporary file goes to a private
    temporary directory (not into site-packages), line-break characters inside a caption become
    spaces, and a line-count mismatch raises instead of silently misaligning captions.
    """
    java = java or java_path()
    if not java:
        raise RuntimeError(JAVA_NOT_FOUND)
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    captions = [_one_line(c) for c in captions]
    if not captions:
        return []
    with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_bytes(("\n".join(captions) + "\n").encode("utf-8"))
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
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
_ABBREV_ANY_CASE = frozenset("""
mr mrs ms dr drs jr sr st mt ft co cos inc ltd corp vs etc cf al esq bros dept univ assn ph.d
jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
ave rd blvd sq ct tel calif prof gen col capt sgt lt rev gov sen sens rep reps adm maj pvt
messrs hon mme mlle pres supt det ala ariz colo conn fla ga ind kan ky md mich minn mo mont
neb nev okla penn tenn va vt wis wyo
""".split())
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
    "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u2013": " -- ", "\u2014": " -- ", "\u2015": " -- ",
    "\u2026": " ... ", "\u0085": " ... ",
    "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE_MAP)))


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
        if piece[0] in "\"`":
            head.append("``")
            piece = piece[1:].lstrip("`") if piece.startswith("``") else piece[1:]
        elif piece[0] == "'" and not _is_apostrophe_word(re.sub(r"[^\w']+$", "", low)):
            head.append("`")
            piece = piece[1:]
        elif piece[0] in ",;:!?":
            run = re.match(r"[!?]+|.", piece).group(0)
            head.append(run)
            piece = piece[len(run):]
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
            run = re.search(r"[!?]+$", piece).group(0)
            tail.append(run)
            piece = piece[: -len(run)]
        elif last in ",;:" or (last in "/-&_#@" and len(piece) > 1):
            tail.append(last)
            piece = piece[:-1]
        elif piece.endswith(".."):
            dots = re.search(r"\.+$", piece).group(0)
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
    return (low in _APOSTROPHE_WORDS or re.match(r"'(s|re|ve|d|ll|m)[-/]", low) is not None or low.startswith(("'tis", "'twas"))
            or re.fullmatch(r"'\d0s", low) is not None)


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
            return _split_word(word[: m.start()]) + [word[m.start():]]
        return _split_word(word[: m.start()]) + [m.group(0)] + _split_word(word[m.end():])
    m = re.match(r"(?i)'(s|re|ve|d|ll|m)(?=[-/].)", word)  # "'s-eye-view" -> "'s - eye-view"
    if m:
        return [m.group(0), word[m.end()]] + _split_word(word[m.end() + 1:])
    # "a&b" -> "a & b" but "AT&T" stays.
    m = re.search(r"&", word)
    if m and 0 < m.start() < len(word) - 1 and not re.fullmatch(r"[A-Z]+&[A-Z]+", word):
        return _split_word(word[: m.start()]) + ["&"] + _split_word(word[m.end():])
    # A contraction glued to the next word by "-" or "/" still splits: "it's-a" -> "it 's - a".
    m = _GLUED_CONTRACTION.search(word)
    if m and m.end() < len(word) - 1:
        return _split_word(word[: m.end()]) + [word[m.end()]] + _split_word(word[m.end() + 1:])
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


def _nltk_bleu(keys: Sequence[str], hyps: Mapping[str, str], refs: Mapping[str, Sequence[str]],
               tokenize: Callable[[str], list[str]]) -> dict[str, float]:
    from nltk.translate.bleu_score import corpus_bleu

    list_of_references = [[tokenize(r) for r in refs[k]] for k in keys]
    hypotheses = [tokenize(hyps[k]) for k in keys]
    out = {}
    with warnings.catch_warnings():
        # Without smoothing NLTK warns (and returns 0) when some n-gram order has no match.
        warnings.simplefilter("ignore")
        for name, weights in NLTK_WEIGHTS.items():
            out[name] = float(corpus_bleu(list_of_references, hypotheses, weights=weights))
    return out


# ---------------------------------------------------------------------------------------------
# Java scorers: METEOR and SPICE


class _JavaFailure(Exception):
    pass


def _tail(data: bytes | str | None, limit: int = 300) -> str:
    if not data:
        return "(no output)"
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    data = " ".join(data.strip().split())
    return data if len(data) <= limit else "..." + data[-limit:]


_BORROWED_METEOR: type | None = None


def _borrowed_meteor_class() -> type:
    """pycocoevalcap's Meteor bound to a process we own: no Popen in __init__, no __del__ (theirs
    re-acquires a lock that compute_score never releases when Java dies, and so blocks forever)."""
    global _BORROWED_METEOR
    if _BORROWED_METEOR is None:
        from pycocoevalcap.meteor.meteor import Meteor

        class _BorrowedMeteor(Meteor):
            def __init__(self, proc: subprocess.Popen) -> None:  # noqa: D401 - no super().__init__
                self.meteor_p = proc
                self.lock = threading.Lock()

            def __del__(self) -> None:
                pass

        _BORROWED_METEOR = _BorrowedMeteor
    return _BORROWED_METEOR


def _meteor_command(java: str, jar: str) -> list[str]:
    """pycocoevalcap's METEOR command line (a test replaces it with a crashing or hanging one)."""
    return [java, "-jar", "-Xmx2G", jar, "-", "-", "-stdio", "-l", "en", "-norm"]


class _MeteorProcess:
    """pycocoevalcap's METEOR (same jar, command and line protocol) with a safe process lifetime.

    pycocoevalcap's `Meteor` pipes stderr without reading it, never releases its lock when the Java
    side dies (its `__del__` then blocks forever) and has no timeout. Here stderr goes to a file,
    a watchdog kills Java after `timeout` seconds, and `close()` always reaps the process.
    """

    def __init__(self, java: str):
        from pycocoevalcap.meteor import meteor as meteor_module

        self._module = meteor_module
        cwd = Path(meteor_module.__file__).resolve().parent
        self._stderr = tempfile.TemporaryFile()
        self.cmd = _meteor_command(java, meteor_module.METEOR_JAR)
        try:
            self.proc = subprocess.Popen(self.cmd, cwd=str(cwd), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr)
        except BaseException:
            self._stderr.close()
            raise
        self.timed_out = False

    def score(self, gts: Mapping[str, list[str]], res: Mapping[str, list[str]],
              timeout: float) -> tuple[float, list[float]]:
        # Reuse pycocoevalcap's own protocol code (Meteor.compute_score) on our process.
        meteor = _borrowed_meteor_class()(self.proc)
        gts = {k: [r.replace("|||", "") for r in v] for k, v in gts.items()}

        def kill() -> None:
            self.timed_out = True
            self._kill()

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            score, scores = meteor.compute_score(gts, res)
        except Exception as exc:  # Java died, was killed, or printed garbage
            if self.timed_out:
                raise _JavaFailure(f"METEOR timed out after {timeout:.0f} s") from exc
            raise _JavaFailure(f"METEOR failed ({type(exc).__name__}: {exc}); java: {self.stderr_tail()}") from exc
        finally:
            timer.cancel()
        if not math.isfinite(score):
            raise _JavaFailure(f"METEOR returned {score!r}")
        return float(score), [float(x) for x in scores]

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return _tail(self._stderr.read())
        except (OSError, ValueError):
            return "(stderr unavailable)"

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.poll() is None:
                self.proc.kill()

    def close(self) -> None:
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream:
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # closing stdin ends METEOR's -stdio loop
        self._kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(OSError, ValueError):
            self._stderr.close()

    def __enter__(self) -> "_MeteorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _spice_unavailable_reason() -> str | None:
    lib = _pycocoevalcap_dir() / "spice" / "lib"
    missing = [j for j in SPICE_CORENLP_JARS if not (lib / j).is_file()]
    if missing:
        return (f"needs Stanford CoreNLP 3.6.0 ({', '.join(missing)} in {lib}), which pycocoevalcap "
                "downloads from nlp.stanford.edu on first use; not installed and not downloaded here")
    return None


def _run_spice(java: str, gts: Mapping[str, list[str]], res: Mapping[str, list[str]], timeout: float) -> float:
    spice_dir = _pycocoevalcap_dir() / "spice"
    data = [{"image_id": k, "test": res[k][0], "refs": gts[k]} for k in gts]
    with tempfile.TemporaryDirectory(prefix="captioner-spice-") as tmp:
        in_path, out_path = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_path.write_text(json.dumps(data), encoding="utf-8")
        # pycocoevalcap's command, minus its LMDB cache in site-packages.
        cmd = [java, "-jar", "-Xmx8G", "spice-1.0.jar", str(in_path), "-out", str(out_path), "-subset", "-silent"]
        try:
            proc = subprocess.run(cmd, cwd=str(spice_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise _JavaFailure(f"SPICE timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0 or not out_path.is_file():
            raise _JavaFailure(f"SPICE exited with {proc.returncode}: {_tail(proc.stdout)}")
        results = json.loads(out_path.read_text(encoding="utf-8"))
    scores = []
    for item in results:
        try:
            scores.append(float(item["scores"]["All"]["f"]))
        except (KeyError, TypeError, ValueError):
            scores.append(float("nan"))
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        raise _JavaFailure("SPICE returned no scores")
    return sum(finite) / len(finite)


# ---------------------------------------------------------------------------------------------
# The entry point


def _validate(hypotheses: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    if not isinstance(hypotheses, Mapping) or not isinstance(references, Mapping):
        raise TypeError("hypotheses and references must be dicts keyed by image")
    missing_refs = [k for k in hypotheses if k not in references]
    missing_hyps = [k for k in references if k not in hypotheses]
    if missing_refs or missing_hyps:
        parts = []
        if missing_refs:
            parts.append(f"{len(missing_refs)} hypothesis key(s) without references: {_preview(missing_refs)}")
        if missing_hyps:
            parts.append(f"{len(missing_hyps)} reference key(s) without a hypothesis: {_preview(missing_hyps)}")
        raise ValueError("hypotheses and references must have the same keys; " + "; ".join(parts))
    if not hypotheses:
        raise ValueError("nothing to score: hypotheses and references are empty")
    for k, h in hypotheses.items():
        if not isinstance(h, str):
            raise TypeError(f"hypotheses[{k!r}] must be one caption (str), got {type(h).__name__}")
    for k, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references[{k!r}] must be a list of captions, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"references[{k!r}] is empty: every image needs at least one reference")
        if not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references[{k!r}] must contain only strings")
    return list(hypotheses)


def _preview(keys: list[Any], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def score_captions(
    hypotheses: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    use_java: bool | None = None,
    spice: bool = False,
    nltk: bool = True,
    nltk_tokenizer: Callable[[str], list[str]] | None = None,
    java_timeout: float | None = None,
    per_image: bool = False,
) -> EvaluationResult:
    """Score generated captions against reference captions with coco-caption and NLTK metrics.

    hypotheses: image key -> one generated caption (plain text).
    references: image key -> the raw human captions for that image (any case and punctuation).
    use_java: None uses Java when `java` is on PATH; True requires it (RuntimeError if missing);
        False never starts Java (Python tokenizer, METEOR and SPICE skipped).
    spice: also try SPICE (slow; needs Stanford CoreNLP 3.6.0 jars that pycocoevalcap downloads on
        first use, so it is reported as skipped where they are absent).
    nltk: also report NLTK corpus_bleu (no smoothing) on `nltk_tokenizer`-cleaned text
        (default `nltk_tokenize`).
    per_image: also return each image's coco scores (BLEU-n per sentence, METEOR, ROUGE-L,
        CIDEr-D) in `EvaluationResult.per_image`, e.g. to list the worst captions.
    java_timeout: seconds after which a Java scorer is killed and reported as skipped
        (default: 300 s + 0.2 s per image; METEOR alone needs 10-25 s to load its tables).
    """
    keys = _validate(hypotheses, references)
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("caption metrics need pycocoevalcap and nltk: pip install pycocoevalcap nltk") from exc

    n = len(keys)
    timeout = float(java_timeout) if java_timeout is not None else 300.0 + 0.2 * n
    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    timings: dict[str, float] = {}
    images: dict[str, dict[str, float]] = {k: {} for k in keys}

    java = java_path() if use_java is not False else None
    if use_java is True and not java:
        raise RuntimeError(f"use_java=True but {JAVA_NOT_FOUND}")
    no_java_reason = JAVA_DISABLED if use_java is False else JAVA_NOT_FOUND

    meteor_proc: _MeteorProcess | None = None
    with contextlib.ExitStack() as stack:
        if java:
            # Start METEOR first: loading its paraphrase table overlaps with tokenisation.
            try:
                meteor_proc = stack.enter_context(_MeteorProcess(java))
            except OSError as exc:
                skipped["METEOR"] = f"could not start Java: {exc}"

        # Tokenise every caption (hypotheses and references) in one go.
        flat = [hypotheses[k] for k in keys] + [r for k in keys for r in references[k]]
        t0 = time.perf_counter()
        tokenizer = TOKENIZER_PYTHON
        tokens: list[str] | None = None
        if java:
            try:
                tokens = ptb_tokenize_java(flat, java=java, timeout=timeout)
                tokenizer = TOKENIZER_JAVA
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                if use_java is True:
                    raise
                notes.append(f"Java PTB tokenizer failed ({exc}); used the Python re-implementation")
        if tokens is None:
            tokens = ptb_tokenize_python(flat)
        timings["tokenize"] = time.perf_counter() - t0
        res = {k: [tokens[i]] for i, k in enumerate(keys)}
        gts: dict[str, list[str]] = {}
        pos = n
        for k in keys:
            m = len(references[k])
            gts[k] = tokens[pos: pos + m]
            pos += m

        sink = io.StringIO()  # pycocoevalcap prints progress and BLEU internals
        for names, scorer in ((COCO_METRICS[:4], Bleu(4)), (["ROUGE-L"], Rouge()), (["CIDEr-D"], Cider())):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sink):
                score, scores = scorer.compute_score(gts, res)
            values, per_key = (score, scores) if len(names) > 1 else ([score], [scores])
            metrics.update({name: float(v) for name, v in zip(names, values)})
            for name, column in zip(names, per_key):
                for k, v in zip(keys, column):
                    images[k][name] = float(v)
            timings[names[0] if len(names) == 1 else "BLEU"] = time.perf_counter() - t0

        if not java:
            skipped.setdefault("METEOR", no_java_reason)
        elif meteor_proc is not None:
            t0 = time.perf_counter()
            try:
                metrics["METEOR"], column = meteor_proc.score(gts, res, timeout)
                for k, v in zip(keys, column):
                    images[k]["METEOR"] = v
            except _JavaFailure as exc:
                skipped["METEOR"] = str(exc)
            finally:
                meteor_proc.close()
            timings["METEOR"] = time.perf_counter() - t0

    if spice:
        t0 = time.perf_counter()
        reason = no_java_reason if not java else _spice_unavailable_reason()
        if reason:
            skipped["SPICE"] = reason
        else:
            try:
                metrics["SPICE"] = _run_spice(java, gts, res, timeout)
            except (_JavaFailure, OSError, ValueError) as exc:
                skipped["SPICE"] = str(exc)
            timings["SPICE"] = time.perf_counter() - t0

    if nltk:
        t0 = time.perf_counter()
        metrics.update(_nltk_bleu(keys, hypotheses, references, nltk_tokenizer or nltk_tokenize))
        timings["nltk_BLEU"] = time.perf_counter() - t0
        notes.append("nltk_BLEU: nltk corpus_bleu on lower-cased, punctuation-stripped, whitespace-split "
                     "text, no smoothing (not comparable with coco-caption BLEU)")

    return EvaluationResult(metrics=_ordered(metrics), skipped=_ordered(skipped), tokenizer=tokenizer,
                            num_images=n, notes=notes, timings=timings,
                            per_image={k: _ordered(v) for k, v in images.items()} if per_image else None)
