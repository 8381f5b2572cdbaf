"""Caption metrics: checked against independent implementations on a tiny hand-made set.

Tests that need Java skip when `java` is not on PATH; the no-Java path runs everywhere.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import Counter

import pytest

pytest.importorskip("pycocoevalcap")
pytest.importorskip("nltk")

from captioner.errors import ArgumentError, UserError
from captioner.metrics import (
    PTB_PUNCTUATIONS,
    TOKENIZER_JAVA,
    TOKENIZER_PYTHON,
    CiderD,
    EvaluationResult,
    JavaNotFoundError,
    nltk_tokenize,
    ptb_tokenize_java,
    ptb_tokenize_python,
    score_captions,
    scorers,
    tokenize,
)

HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="Java not installed")

# Four images, two or three raw references each (case and punctuation as in a dataset).
REFS = {
    "img1": ["A dog runs through the green grass.", "A brown dog is running on grass.", "The dog runs."],
    "img2": ["A man is riding a bicycle down the street.", "A man rides his bike on a city street."],
    "img3": ["Two kids are playing in the water.", "Children splash in a pool.", "Two children play in the water at the beach."],
    "img4": ["A woman wearing a red coat walks in the snow.", "A lady in a red jacket."],
}
HYPS = {
    "img1": "a dog runs through the grass",
    "img2": "a man rides a bike on a street",
    "img3": "two children play in the water",
    "img4": "a woman in a red coat",
}
PERFECT = {k: v[0] for k, v in REFS.items()}
WRONG = {k: "purple elephants juggle quietly" for k in REFS}


def simple_tokens(text: str) -> list[str]:
    """Enough tokenisation for the hand-made set (only '.' and ',' as punctuation)."""
    return text.lower().replace(".", " ").replace(",", " ").split()


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def reference_bleu(hyps: dict[str, str], refs: dict[str, list[str]], max_n: int = 4) -> list[float]:
    """Corpus BLEU from the definition: clipped n-gram precisions summed over the corpus, brevity
    penalty against the closest reference length (ties -> the shorter one), as coco-caption does."""
    correct, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for key, hyp in hyps.items():
        h = simple_tokens(hyp)
        rs = [simple_tokens(r) for r in refs[key]]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            max_ref = Counter()
            for r in rs:
                for g, c in ngrams(r, n).items():
                    max_ref[g] = max(max_ref[g], c)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in ngrams(h, n).items())
            total[n - 1] += max(0, len(h) - n + 1)
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    out, log_sum = [], 0.0
    for n in range(max_n):
        log_sum += math.log(correct[n] / total[n])
        out.append(bp * math.exp(log_sum / (n + 1)))
    return out


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def reference_rouge_l(hyps: dict[str, str], refs: dict[str, list[str]], beta: float = 1.2) -> float:
    """coco-caption's ROUGE-L: best precision and best recall over the references, F-beta, mean."""
    scores = []
    for key, hyp in hyps.items():
        h = simple_tokens(hyp)
        precs = [lcs(simple_tokens(r), h) / len(h) for r in refs[key]]
        recs = [lcs(simple_tokens(r), h) / len(simple_tokens(r)) for r in refs[key]]
        p, r = max(precs), max(recs)
        scores.append(0.0 if p == 0 or r == 0 else (1 + beta**2) * p * r / (r + beta**2 * p))
    return sum(scores) / len(scores)


# The model, perfect and wrong hypotheses side by side, for the one Java run (METEOR alone needs
# 10-25 s to load its tables, so the Java tests share it).
UNION_HYPS = {f"{tag}_{k}": h[k] for tag, h in (("m", HYPS), ("p", PERFECT), ("w", WRONG)) for k in REFS}
UNION_REFS = {f"{tag}_{k}": REFS[k] for tag in "mpw" for k in REFS}


@pytest.fixture(scope="module")
def java_result() -> EvaluationResult:
    if not HAS_JAVA:
        pytest.skip("Java not installed")
    return score_captions(UNION_HYPS, UNION_REFS, use_java=True, spice=True, per_image=True)


# --------------------------------------------------------------------------------------------
# BLEU, ROUGE-L, CIDEr-D, NLTK against independent computations (Java-free path)


def test_bleu_matches_independent_implementation_python_tokenizer():
    result = score_captions(HYPS, REFS, use_java=False)
    expected = reference_bleu(HYPS, REFS)
    got = [result.metrics[f"BLEU-{n}"] for n in range(1, 5)]
    assert got == pytest.approx(expected, abs=1e-6)
    # The set is built so the brevity penalty bites: the hypotheses are shorter than the closest refs.
    assert expected[0] < 0.95
    assert result.metrics["ROUGE-L"] == pytest.approx(reference_rouge_l(HYPS, REFS), abs=1e-6)


def test_hand_worked_bleu_and_rouge():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": equal lengths (BP = 1),
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3; LCS = 5 -> P = R = 5/6.
    result = score_captions({"x": "the cat sat on the mat"}, {"x": ["The cat is on the mat."]}, use_java=False)
    m = result.metrics
    assert m["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    assert m["BLEU-2"] == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert m["BLEU-3"] == pytest.approx(0.5, abs=1e-6)
    assert m["BLEU-4"] < 1e-3  # coco adds 1e-15 to counts, so "zero" is ~8e-5
    assert m["nltk_BLEU-4"] < 1e-9  # NLTK without smoothing: 0 (recent versions return ~1e-78)
    assert m["ROUGE-L"] == pytest.approx(5 / 6, abs=1e-6)


def test_perfect_and_wrong_hypotheses():
    perfect = score_captions(PERFECT, REFS, use_java=False).metrics
    for n in range(1, 5):
        assert perfect[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
        assert perfect[f"nltk_BLEU-{n}"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["ROUGE-L"] == pytest.approx(1.0, abs=1e-9)

    wrong = score_captions(WRONG, REFS, use_java=False).metrics
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "nltk_BLEU-1", "nltk_BLEU-4"):
        assert wrong[name] == pytest.approx(0.0, abs=1e-6), name


def test_cider_d_orders_identical_above_mixed_above_wrong():
    mixed = {k: (PERFECT[k] if i % 2 == 0 else WRONG[k]) for i, k in enumerate(REFS)}
    cider = {
        name: score_captions(h, REFS, use_java=False).metrics["CIDEr-D"]
        for name, h in (("perfect", PERFECT), ("mixed", mixed), ("model", HYPS), ("wrong", WRONG))
    }
    assert cider["perfect"] > cider["mixed"] > cider["wrong"]
    assert cider["perfect"] > cider["model"] > cider["wrong"]
    assert cider["wrong"] == pytest.approx(0.0, abs=1e-9)
    assert cider["perfect"] > 1.0  # CIDEr-D is not capped at 1


def test_nltk_bleu_equals_nltk_corpus_bleu_on_the_same_tokens():
    from nltk.translate.bleu_score import corpus_bleu

    result = score_captions(HYPS, REFS, use_java=False)
    keys = list(HYPS)
    list_of_refs = [[nltk_tokenize(r) for r in REFS[k]] for k in keys]
    hyps = [nltk_tokenize(HYPS[k]) for k in keys]
    weights = [(1, 0, 0, 0), (0.5, 0.5, 0, 0), (1 / 3, 1 / 3, 1 / 3, 0), (0.25, 0.25, 0.25, 0.25)]
    for n, w in enumerate(weights, start=1):
        assert result.metrics[f"nltk_BLEU-{n}"] == pytest.approx(corpus_bleu(list_of_refs, hyps, weights=w), abs=1e-12)
    # On this set the cleaning and PTB tokens agree, so NLTK's corpus BLEU equals coco's BLEU too.
    expected = reference_bleu(HYPS, REFS)
    assert [result.metrics[f"nltk_BLEU-{n}"] for n in range(1, 5)] == pytest.approx(expected, abs=1e-6)
    assert nltk_tokenize("A dog's 2 toys, outside.") == ["a", "dogs", "toys", "outside"]


def test_no_java_path_reports_meteor_and_spice_skipped(capsys):
    result = score_captions(HYPS, REFS, use_java=False, spice=True)
    assert result.tokenizer == TOKENIZER_PYTHON
    assert "METEOR" not in result.metrics and "SPICE" not in result.metrics
    assert result.skipped["METEOR"] == "Java not used (use_java=False)"
    assert result.skipped["SPICE"] == "Java not used (use_java=False)"
    assert result.num_images == 4
    assert capsys.readouterr().out == ""  # pycocoevalcap's prints are swallowed


def test_missing_java_is_reported_as_not_found(monkeypatch):
    monkeypatch.setattr(scorers, "java_path", lambda: None)
    result = score_captions(HYPS, REFS)
    assert result.skipped["METEOR"] == "Java not found (no `java` on PATH)"
    assert result.tokenizer == TOKENIZER_PYTHON
    with pytest.raises(JavaNotFoundError, match="Java not found") as info:
        score_captions(HYPS, REFS, use_java=True)
    assert isinstance(info.value, UserError) and isinstance(info.value, RuntimeError)  # RuntimeError as before
    monkeypatch.setattr(tokenize, "java_path", lambda: None)
    with pytest.raises(JavaNotFoundError):
        ptb_tokenize_java(["a dog"])


# --------------------------------------------------------------------------------------------
# Input validation and the result object


def test_key_mismatch_names_the_keys():
    refs = {**REFS, "img5": ["A cat."]}
    hyps = {**HYPS, "img9": "a bird"}
    with pytest.raises(ArgumentError) as info:  # a UserError (and a ValueError)
        score_captions(hyps, refs, use_java=False)
    assert "'img9'" in str(info.value) and "'img5'" in str(info.value)


@pytest.mark.parametrize(
    "hyps, refs, error",
    [
        ({}, {}, ArgumentError),
        ({"a": "a dog"}, {"a": []}, ArgumentError),
        ({"a": "a dog"}, {"a": "A dog."}, TypeError),
        ({"a": ["a dog"]}, {"a": ["A dog."]}, TypeError),
    ],
)
def test_bad_inputs(hyps, refs, error):
    with pytest.raises(error):
        score_captions(hyps, refs, use_java=False)


def test_result_table_and_dict():
    result = score_captions(HYPS, REFS, use_java=False)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["metrics"]["BLEU-1"] == pytest.approx(result.metrics["BLEU-1"])  # raw fraction
    assert 0 < data["metrics"]["BLEU-1"] < 1
    assert data["skipped"]["METEOR"] and data["num_images"] == 4
    assert list(data["metrics"])[:5] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"]

    table = result.format_table(title="tiny set")
    lines = table.splitlines()
    assert lines[0] == "tiny set"
    bleu1 = next(line for line in lines if line.startswith("BLEU-1 "))
    assert f"{100 * result.metrics['BLEU-1']:.1f}" in bleu1  # printed x100
    meteor = next(line for line in lines if line.startswith("METEOR "))
    assert "skipped: Java not used" in meteor
    # Scores are right-aligned in one column.
    score_lines = [line for line in lines if line.split(" ")[0] in result.metrics]
    ends = {len(line.split("  skipped")[0].rstrip()) for line in score_lines}
    assert len(ends) == 1
    assert f"{100 * result.metrics['CIDEr-D']:.2f}" in result.format_table(decimals=2)


# --------------------------------------------------------------------------------------------
# CiderD: CIDEr-D with document frequencies from a fixed corpus


def coco_cider(hyps: dict[str, str], refs: dict[str, list[str]]):
    """pycocoevalcap's CIDEr-D (document frequencies from the scored set) on Python-PTB tokens."""
    from pycocoevalcap.cider.cider import Cider

    keys = list(hyps)
    res = {k: ptb_tokenize_python([hyps[k]]) for k in keys}
    gts = {k: ptb_tokenize_python(refs[k]) for k in keys}
    return Cider().compute_score(gts, res)


def test_cider_d_matches_pycocoevalcap_when_the_corpus_is_the_scored_set():
    cider = CiderD(UNION_REFS)
    assert cider.num_images == 12
    mean, per_key = cider.score(UNION_HYPS)
    expected_mean, expected = coco_cider(UNION_HYPS, UNION_REFS)
    assert per_key.shape == (12,)
    assert per_key == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(expected_mean, abs=1e-12)
    # ... and score_captions' CIDEr-D (same tokens, same scorer) on the same set.
    assert mean == pytest.approx(score_captions(UNION_HYPS, UNION_REFS, use_java=False).metrics["CIDEr-D"], abs=1e-12)


def test_cider_d_identical_scores_high_unrelated_zero():
    cider = CiderD(REFS)
    perfect_mean, perfect = cider.score(PERFECT)
    wrong_mean, wrong = cider.score(WRONG)
    model_mean, _ = cider.score(HYPS)
    assert perfect_mean > 1.0 and all(perfect > 1.0)
    assert wrong_mean == pytest.approx(0.0, abs=1e-12) and wrong == pytest.approx([0.0] * 4, abs=1e-12)
    assert perfect_mean > model_mean > wrong_mean
    # Raw text is PTB-tokenised: case and punctuation do not matter.
    shouted = {k: v.upper().replace(" ", " , ") + " !" for k, v in HYPS.items()}
    assert cider.score(shouted)[1] == pytest.approx(cider.score(HYPS)[1], abs=1e-12)


def test_cider_d_keeps_the_corpus_document_frequencies_for_any_batch():
    cider = CiderD(UNION_REFS)
    _, full = cider.score(UNION_HYPS)
    # A batch of 3 images is weighted by the 12-image corpus, not by itself ...
    batch = {k: UNION_HYPS[k] for k in ("m_img2", "p_img4", "m_img1")}
    _, scores = cider.score(batch)
    keys = list(UNION_HYPS)
    assert scores == pytest.approx([full[keys.index(k)] for k in batch], abs=1e-12)
    # ... which is not what coco-caption gives the batch alone.
    _, alone = coco_cider(batch, {k: UNION_REFS[k] for k in batch})
    assert not scores == pytest.approx(alone, abs=1e-6)
    # Unseen n-grams in hypotheses do not grow the corpus statistics.
    before = len(cider._document_frequency)
    cider.score({"m_img1": "zebras xylophone quokka"})
    assert len(cider._document_frequency) == before


def test_cider_d_bad_inputs():
    with pytest.raises(ArgumentError):
        CiderD({})
    with pytest.raises(ArgumentError):
        CiderD({"a": []})
    cider = CiderD(REFS)
    with pytest.raises(ArgumentError, match="'nope'"):
        cider.score({"nope": "a dog"})
    with pytest.raises(ArgumentError):
        cider.score({})
    with pytest.raises(TypeError):
        cider.score({"img1": ["a dog"]})


# --------------------------------------------------------------------------------------------
# The pure-Python PTB tokenizer (expected outputs taken from the Java tokenizer)

PTB_CASES = [
    ("A dog's toy isn't here.", "a dog 's toy is n't here"),
    ("A man wearing a red shirt .", "a man wearing a red shirt"),
    ('They\'re "happy" (very) and [not] {sad}!', "they 're happy -lrb- very -rrb- and -lsb- not -rsb- -lcb- sad -rcb-"),
    ("I can't, won't, don't; cannot gonna wanna.", "i ca n't wo n't do n't can not gon na wan na"),
    ("Mr. Smith at St. Paul's in the U.S. etc.", "mr. smith at st. paul 's in the u.s. etc."),
    ("A t-shirt -- and - a 3.5 1,000 $5 50%", "a t-shirt and a 3.5 1,000 $ 5 50 %"),
    ("The \u201cquoted\u201d text \u2018single\u2019 \u2013 dash \u2026 ellipsis", "the quoted text single dash ellipsis"),
    ("people standing on a sidewalk,near a bus", "people standing on a sidewalk near a bus"),
    ("wow!! what?? yes?! ok...", "wow !! what ?? yes ?! ok"),
    ("Colour grey theatre", "colour grey theatre"),
    ("the No. 5 bus and the girls' bags", "the no. 5 bus and the girls bags"),
    ("Miss. Smith and miss. smith", "miss. smith and miss smith"),
    ("It's-A DOG", "it 's a dog"),
    ("A dog\nruns", "a dog runs"),
    ("", ""),
    ("...", ""),
]


@pytest.mark.parametrize("raw, expected", PTB_CASES)
def test_python_ptb_tokenizer(raw, expected):
    assert ptb_tokenize_python([raw]) == [expected]


def test_punctuation_list_is_coco_captions():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    assert PTB_PUNCTUATIONS == PUNCTUATIONS


TYPICAL_CAPTIONS = [
    "A black dog is running through the grass.",
    "Two young girls are playing on a swing set, laughing.",
    "A man in a blue shirt and jeans is standing next to a car .",
    "A woman's hand holding a cell phone.",
    "The children aren't watching the T.V. in the living room.",
    "A skateboarder does a trick on a ramp (in mid-air).",
    "Three people sit on a bench; one is reading a newspaper.",
    'A sign that reads "STOP" at an intersection.',
    "A dog catches a frisbee in his mouth!",
    "Is that a cat on the roof?",
    "A close-up of a 10-year-old boy's face.",
    "Two dogs play tug-of-war with a rope -- outside.",
    "A man rides a bike down the street...",
    "A group of people at St. Patrick's Day parade in New York.",
    "Kids playing soccer at 3:30 p.m. on a sunny day",
    "A BROWN DOG JUMPS OVER A FENCE",
    "A snowboarder in mid-air, with mountains in the background",
]


@needs_java
def test_python_tokenizer_matches_java_tokenizer():
    captions = TYPICAL_CAPTIONS + [raw for raw, _ in PTB_CASES]
    assert ptb_tokenize_python(captions) == ptb_tokenize_java(captions)


# --------------------------------------------------------------------------------------------
# Java path: coco-caption end to end


@needs_java
def test_java_run_matches_independent_bleu_and_rouge(java_result):
    assert java_result.tokenizer == TOKENIZER_JAVA
    assert java_result.num_images == 12
    got = [java_result.metrics[f"BLEU-{n}"] for n in range(1, 5)]
    assert got == pytest.approx(reference_bleu(UNION_HYPS, UNION_REFS), abs=1e-6)
    assert java_result.metrics["ROUGE-L"] == pytest.approx(reference_rouge_l(UNION_HYPS, UNION_REFS), abs=1e-6)
    # Same tokens, so the Java-free run gives the same numbers.
    python_result = score_captions(UNION_HYPS, UNION_REFS, use_java=False, per_image=True)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "nltk_BLEU-4"):
        assert java_result.metrics[name] == pytest.approx(python_result.metrics[name], abs=1e-12)
    assert python_result.per_image["p_img1"]["ROUGE-L"] == pytest.approx(1.0)


@needs_java
def test_java_run_computes_meteor(java_result):
    assert "METEOR" not in java_result.skipped, java_result.skipped
    assert 0.2 < java_result.metrics["METEOR"] < 1.0
    per_image = java_result.per_image
    assert sum(per_image[f"m_{k}"]["METEOR"] for k in REFS) / 4 > 0.3
    for k in REFS:
        assert per_image[f"p_{k}"]["METEOR"] > 0.9  # perfect
        assert per_image[f"w_{k}"]["METEOR"] < 0.05  # totally wrong
        assert per_image[f"p_{k}"]["CIDEr-D"] > per_image[f"m_{k}"]["CIDEr-D"] > per_image[f"w_{k}"]["CIDEr-D"]


@needs_java
def test_spice_runs_or_is_skipped_with_a_reason(java_result):
    # Without Stanford CoreNLP 3.6.0 jars (pycocoevalcap downloads them) SPICE is skipped; never hangs.
    assert ("SPICE" in java_result.metrics) != ("SPICE" in java_result.skipped)
    if "SPICE" in java_result.skipped:
        assert java_result.skipped["SPICE"]


# --------------------------------------------------------------------------------------------
# A broken METEOR becomes a skipped entry, never an exception, a hang or a leftover process


@pytest.fixture
def fake_java(monkeypatch):
    """Pretend Java exists; the PTB tokenizer then fails (falls back) and METEOR runs `command`."""
    started: list[scorers._MeteorProcess] = []
    real_init = scorers._MeteorProcess.__init__

    def recording_init(self, java):
        real_init(self, java)
        started.append(self)

    monkeypatch.setattr(scorers, "java_path", lambda: "/nonexistent/java")
    monkeypatch.setattr(scorers._MeteorProcess, "__init__", recording_init)

    def use(command: list[str]):
        monkeypatch.setattr(scorers, "_meteor_command", lambda java, jar: command)
        return started

    return use


def test_meteor_crash_is_skipped_with_reason(fake_java):
    started = fake_java([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    result = score_captions(HYPS, REFS)
    assert "METEOR" not in result.metrics
    assert result.skipped["METEOR"].startswith("METEOR failed")
    assert "boom" in result.skipped["METEOR"]
    assert any("Java PTB tokenizer failed" in note for note in result.notes)
    assert result.tokenizer == TOKENIZER_PYTHON
    assert result.metrics["BLEU-4"] == pytest.approx(reference_bleu(HYPS, REFS)[3], abs=1e-6)
    assert started and all(p.proc.returncode is not None for p in started)


def test_meteor_hang_is_killed_after_timeout(fake_java):
    started = fake_java([sys.executable, "-c", "import time; time.sleep(120)"])
    result = score_captions(HYPS, REFS, java_timeout=1.0)
    assert result.skipped["METEOR"] == "METEOR timed out after 1 s"
    assert started and all(p.proc.returncode is not None for p in started)  # reaped, no zombie


def test_meteor_garbage_output_is_skipped(fake_java):
    started = fake_java([sys.executable, "-c", "import sys\nfor line in sys.stdin: print('not a number', flush=True)"])
    result = score_captions(HYPS, REFS)
    assert result.skipped["METEOR"].startswith("METEOR failed (ValueError")
    assert started and all(p.proc.returncode is not None for p in started)
