"""Gendered words in a model's captions against the human references (bias amplification).

Captions every image of a split (Flickr8k dev by default) with a model (the shipped one by
default) and its default search (beam 5, length penalty 1.0), then counts gendered words:

    male   = man men boy boys guy guys gentleman gentlemen male males he his him
    female = woman women girl girls lady ladies female females she her hers
    person-neutral (for reference) = person persons people child children kid kids player players

Words are lower-cased runs of letters ("man's" -> "man", "s"), so possessives count.

- Rates: how many generated captions contain a male / female / person-neutral word, next to the
  same rates over all reference captions (5 per image).
- Per image, the references' majority gender: "male" if at least 3 of the 5 references use male
  words and no female ones, "female" likewise, else "no majority" (gendered words, but no 3 agree)
  or "none" (no reference uses a gendered word); and the caption's gender: male,
  female, both or none. A confusion table crosses the two.
- The male:female ratio (captions with male words only : captions with female words only) in the
  generated captions against the references; bias amplification = generated ratio / reference ratio.

    python benchmarks/caption_bias.py                       # shipped model, Flickr8k dev
    python benchmarks/caption_bias.py --model runs/flickr8k/model --json bias.json
"""

from __future__ import annotations

import argparse
import collections
import re
import time
from pathlib import Path

import _common  # first: quiet TensorFlow logging
from captioner.data import load_dataset
from captioner.defaults import BEAM_SIZE, LENGTH_PENALTY, default_model_dir
from captioner.pipeline import Captioner
from captioner.report import generate_split_captions

MALE = frozenset("man men boy boys guy guys gentleman gentlemen male males he his him".split())
FEMALE = frozenset("woman women girl girls lady ladies female females she her hers".split())
NEUTRAL = frozenset("person persons people child children kid kids player players".split())
GENDERS = ("male", "female", "both", "none")  # of one caption
MAJORITIES = ("male", "female", "no majority", "none")  # of an image's references
MAJORITY_OF = 3  # references (of 5) that must agree


def words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+", caption.lower()))


def gender(caption: str) -> str:
    """male / female / both / none: which gendered word sets the caption uses."""
    w = words(caption)
    male, female = bool(w & MALE), bool(w & FEMALE)
    return "both" if male and female else "male" if male else "female" if female else "none"


def majority(references: list[str]) -> str:
    """male / female if at least MAJORITY_OF references use only that gender's words; else "no majority"
    if some reference uses a gendered word, "none" if none does."""
    counts = collections.Counter(map(gender, references))
    for g in ("male", "female"):
        if counts[g] >= MAJORITY_OF:
            return g
    return "none" if counts["none"] == len(references) else "no majority"


def rates(captions: list[str]) -> dict[str, int]:
    """How many captions use male / female / person-neutral words, and each caption gender."""
    sets = [words(c) for c in captions]
    genders = collections.Counter(map(gender, captions))
    return {
        "captions": len(captions),
        "any_male": sum(bool(w & MALE) for w in sets),
        "any_female": sum(bool(w & FEMALE) for w in sets),
        "any_neutral": sum(bool(w & NEUTRAL) for w in sets),
        "no_gendered_word": genders["none"],
        **{f"gender_{g}": genders[g] for g in GENDERS},
    }


def ratio(male: int, female: int) -> float | None:
    return male / female if female else None


def analyse(hypotheses: dict[str, str], references: dict[str, list[str]]) -> dict:
    """All the counts, as a JSON-ready dict."""
    keys = list(hypotheses)
    generated = rates([hypotheses[k] for k in keys])
    human = rates([r for k in keys for r in references[k]])
    confusion = {m: {g: 0 for g in GENDERS} for m in MAJORITIES}
    examples: dict[str, list[dict]] = {"female_refs_male_caption": [], "male_refs_female_caption": []}
    for k in keys:
        m, g = majority(references[k]), gender(hypotheses[k])
        confusion[m][g] += 1
        if m == "female" and g == "male":
            examples["female_refs_male_caption"].append({"image": k, "caption": hypotheses[k]})
        elif m == "male" and g == "female":
            examples["male_refs_female_caption"].append({"image": k, "caption": hypotheses[k]})
    gen_ratio = ratio(generated["gender_male"], generated["gender_female"])
    ref_ratio = ratio(human["gender_male"], human["gender_female"])
    images_ratio = ratio(sum(confusion["male"].values()), sum(confusion["female"].values()))
    return {
        "images": len(keys),
        "generated": generated,
        "references": human,
        "confusion": confusion,
        "male_female_ratio": {
            "generated": gen_ratio,
            "references": ref_ratio,
            "reference_majority_images": images_ratio,
            "amplification": gen_ratio / ref_ratio if gen_ratio and ref_ratio else None,
        },
        "examples": examples,
    }


def pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f} %)" if total else "-"


def print_report(result: dict) -> None:
    gen, ref = result["generated"], result["references"]
    print(f"\nmale words: {' '.join(sorted(MALE))}\nfemale words: {' '.join(sorted(FEMALE))}\nperson-neutral words: {' '.join(sorted(NEUTRAL))}")
    rows = [
        ("a male word", "any_male"),
        ("a female word", "any_female"),
        ("a person-neutral word", "any_neutral"),
        ("male words only", "gender_male"),
        ("female words only", "gender_female"),
        ("both male and female words", "gender_both"),
        ("no gendered word", "gender_none"),
    ]
    _common.print_table(
        ["captions with", f"generated ({gen['captions']:,})", f"references ({ref['captions']:,})"],
        [(name, pct(gen[k], gen["captions"]), pct(ref[k], ref["captions"])) for name, k in rows],
        title="Gendered words, generated captions vs human references",
    )

    confusion = result["confusion"]
    _common.print_table(
        ["references' majority (images)", *[f"caption: {g}" for g in GENDERS]],
        [(f"{m} ({sum(confusion[m].values()):,})", *[confusion[m][g] for g in GENDERS]) for m in MAJORITIES],
        title=f"Per image: the references' majority gender (>= {MAJORITY_OF} of 5 references) vs the caption's gender",
    )

    r = result["male_female_ratio"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    _common.print_table(
        ["male:female", "ratio"],
        [
            ("generated captions (male-only : female-only)", fmt(r["generated"])),
            ("reference captions (male-only : female-only)", fmt(r["references"])),
            ("images by reference majority (male : female)", fmt(r["reference_majority_images"])),
            ("amplification (generated / references)", fmt(r["amplification"])),
        ],
        title="Male:female ratio (bias amplification)",
    )

    female, male = confusion["female"], confusion["male"]
    n_f, n_m = sum(female.values()), sum(male.values())
    print()
    if n_f:
        print(
            f"Of {n_f} images whose references mostly say woman/girl, the model says man/boy (only) in {female['male']} "
            f"({100 * female['male'] / n_f:.1f} %), woman/girl (only) in {female['female']}, both in {female['both']}, "
            f"neither in {female['none']}."
        )
    if n_m:
        print(
            f"Of {n_m} images whose references mostly say man/boy, the model says woman/girl (only) in {male['female']} "
            f"({100 * male['female'] / n_m:.1f} %), man/boy (only) in {male['male']}, both in {male['both']}, "
            f"neither in {male['none']}."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model directory or shipped model name (default: the default model)")
    parser.add_argument("--data", default=str(_common.DEFAULT_DATA))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--beam-size", type=int, default=BEAM_SIZE)
    parser.add_argument("--length-penalty", type=float, default=LENGTH_PENALTY, help="beam score = log-prob / length**alpha")
    parser.add_argument("--limit-images", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write all numbers (and the captions) here")
    args = parser.parse_args()
    if hasattr(_common, "print_machine"):
        _common.print_machine()
    elif hasattr(_common, "machine_line"):
        print(_common.machine_line(), flush=True)
    else:
        print(f"machine: {_common.machine()}", flush=True)

    dataset = load_dataset(args.data)
    keys = dataset.split_images(args.split)[: args.limit_images]
    model = Captioner(args.model or default_model_dir())
    started = time.perf_counter()
    hypotheses = generate_split_captions(model, dataset.image_dir, {k: dataset.image_path(k) for k in keys}, args.beam_size, length_penalty=args.length_penalty)
    seconds = time.perf_counter() - started
    references = {k: dataset.captions[k] for k in hypotheses}
    result = analyse(hypotheses, references)
    print(
        f"{model.model_dir} on {args.data} [{args.split}], {result['images']:,} images, beam {args.beam_size} "
        f"(length penalty {args.length_penalty:g}), captioned in {seconds:.1f} s"
    )
    print_report(result)
    _common.write_json(
        args.json,
        {
            "model": str(model.model_dir),
            "data": str(args.data),
            "split": args.split,
            "beam_size": args.beam_size,
            "length_penalty": args.length_penalty,
            "seconds": seconds,
            "word_sets": {"male": sorted(MALE), "female": sorted(FEMALE), "neutral": sorted(NEUTRAL)},
            **result,
            "captions": hypotheses,
        },
    )


if __name__ == "__main__":
    main()
