"""`score_captions`: coco-caption's metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE) and NLTK's
corpus BLEU, with METEOR and SPICE run as Java processes that are always reaped and never hang."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from captioner.errors import ArgumentError
from captioner.metrics.result import COCO_METRICS, EvaluationResult, _ordered
from captioner.metrics.tokenize import (
    JAVA_NOT_FOUND,
    TOKENIZER_JAVA,
    TOKENIZER_PYTHON,
    JavaNotFoundError,
    _tail,
    java_path,
    nltk_tokenize,
    ptb_tokenize_java,
    ptb_tokenize_python,
)

__all__ = ["JAVA_DISABLED", "NLTK_WEIGHTS", "SPICE_CORENLP_JARS", "score_captions"]

logger = logging.getLogger(__name__)

# NLTK corpus_bleu weights as tutorials quote them; no smoothing.
NLTK_WEIGHTS = {
    "nltk_BLEU-1": (1.0, 0.0, 0.0, 0.0),
    "nltk_BLEU-2": (0.5, 0.5, 0.0, 0.0),
    "nltk_BLEU-3": (1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0),
    "nltk_BLEU-4": (0.25, 0.25, 0.25, 0.25),
}

JAVA_DISABLED = "Java not used (use_java=False)"


def _nltk_bleu(keys: Sequence[str], hyps: Mapping[str, str], refs: Mapping[str, Sequence[str]], tokenize: Callable[[str], list[str]]) -> dict[str, float]:
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


_BORROWED_METEOR: type | None = None


def _borrowed_meteor_class() -> type:
    """pycocoevalcap's Meteor bound to a process we own: no Popen in __init__, no __del__ (theirs
    re-acquires a lock that compute_score never releases when Java dies, and so blocks forever)."""
    global _BORROWED_METEOR
    if _BORROWED_METEOR is None:
        from pycocoevalcap.meteor.meteor import Meteor

        class _BorrowedMeteor(Meteor):
            def __init__(self, proc: subprocess.Popen) -> None:
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

    def __init__(self, java: str) -> None:
        from pycocoevalcap.meteor import meteor as meteor_module

        self._module = meteor_module
        cwd = Path(meteor_module.__file__).resolve().parent
        self._stderr = tempfile.TemporaryFile()
        self.cmd = _meteor_command(java, meteor_module.METEOR_JAR)
        try:
            self.proc = subprocess.Popen(self.cmd, cwd=str(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        except BaseException:
            self._stderr.close()
            raise
        self.timed_out = False

    def score(self, gts: Mapping[str, list[str]], res: Mapping[str, list[str]], timeout: float) -> tuple[float, list[float]]:
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

    def __enter__(self) -> _MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pycocoevalcap_dir() -> Path:
    import pycocoevalcap.bleu.bleu

    return Path(pycocoevalcap.bleu.bleu.__file__).resolve().parent.parent


SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _spice_unavailable_reason() -> str | None:
    lib = _pycocoevalcap_dir() / "spice" / "lib"
    missing = [j for j in SPICE_CORENLP_JARS if not (lib / j).is_file()]
    if missing:
        return (
            f"needs Stanford CoreNLP 3.6.0 ({', '.join(missing)} in {lib}), which pycocoevalcap "
            "downloads from nlp.stanford.edu on first use; not installed and not downloaded here"
        )
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
            proc = subprocess.run(
                cmd, cwd=str(spice_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
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
        raise ArgumentError("hypotheses and references must have the same keys; " + "; ".join(parts))
    if not hypotheses:
        raise ArgumentError("nothing to score: hypotheses and references are empty")
    for k, h in hypotheses.items():
        if not isinstance(h, str):
            raise TypeError(f"hypotheses[{k!r}] must be one caption (str), got {type(h).__name__}")
    for k, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references[{k!r}] must be a list of captions, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ArgumentError(f"references[{k!r}] is empty: every image needs at least one reference")
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
    use_java: None uses Java when `java` is on PATH; True requires it (JavaNotFoundError if missing);
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
        raise JavaNotFoundError(f"use_java=True but {JAVA_NOT_FOUND}")
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
                logger.warning("Java PTB tokenizer failed (%s); using the Python re-implementation", exc)
        if tokens is None:
            tokens = ptb_tokenize_python(flat)
        timings["tokenize"] = time.perf_counter() - t0
        res = {k: [tokens[i]] for i, k in enumerate(keys)}
        gts: dict[str, list[str]] = {}
        pos = n
        for k in keys:
            m = len(references[k])
            gts[k] = tokens[pos : pos + m]
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
        if reason or not java:
            skipped["SPICE"] = reason or JAVA_NOT_FOUND
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
        notes.append(
            "nltk_BLEU: nltk corpus_bleu on lower-cased, punctuation-stripped, whitespace-split text, no smoothing (not comparable with coco-caption BLEU)"
        )

    for name, reason in skipped.items():
        logger.info("%s skipped: %s", name, reason)
    logger.debug("scored %d images in %s", n, {k: round(v, 2) for k, v in timings.items()})
    return EvaluationResult(
        metrics=_ordered(metrics),
        skipped=_ordered(skipped),
        tokenizer=tokenizer,
        num_images=n,
        notes=notes,
        timings=timings,
        per_image={k: _ordered(v) for k, v in images.items()} if per_image else None,
    )
