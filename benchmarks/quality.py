"""Caption quality of a trained model on a dataset split, next to a trivial baseline.

For each decoding setting (greedy, beam 3, beam 5 by default) it captions every image of the split
and scores the captions with coco-caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) and NLTK
corpus BLEU. The baseline gives every image the most frequent (cleaned) training caption. It also
counts distinct captions (a captioner that ignores its image would produce one) and captions with a
repetition (a word trigram twice, or "X and X"); `--with-repeats` adds rows decoded without the
search's repetition blocking, to measure what the blocking changes.

    python benchmarks/quality.py                       # shipped model, Flickr8k dev split
    python benchmarks/quality.py --model runs/r1/model --beams 1 3 --json quality.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import _common  # first: quiet TensorFlow logging
from captioner.data import load_dataset
from captioner.decoding import SearchDecoder
from captioner.defaults import LENGTH_PENALTY, default_model_dir
from captioner.metrics import score_captions
from captioner.pipeline import Captioner
from captioner.report import generate_split_captions

COLUMNS = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "nltk_BLEU-1", "nltk_BLEU-4"]


def has_repetition(caption: str) -> bool:
    """A word trigram that occurs twice, or "X and X"."""
    words = caption.split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    x_and_x = any(words[i] == words[i + 2] and words[i + 1] == "and" for i in range(len(words) - 2))
    return len(set(trigrams)) < len(trigrams) or x_and_x


def most_frequent_caption(dataset, split: str = "train") -> str:
    counts = collections.Counter(c for caps in dataset.cleaned(split).values() for c in caps)
    return counts.most_common(1)[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model directory or shipped model name (default: the default model)")
    parser.add_argument("--data", default=str(_common.DEFAULT_DATA))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5], help="beam sizes to score (1 = greedy)")
    parser.add_argument("--length-penalty", type=float, default=LENGTH_PENALTY, help="beam score = log-prob / length**alpha")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--limit-images", type=int, default=None)
    parser.add_argument("--no-java", action="store_true", help="Python PTB tokenizer, no METEOR")
    parser.add_argument("--with-repeats", action="store_true", help="also decode without repetition blocking")
    parser.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = parser.parse_args()
    machine = _common.print_machine()

    dataset = load_dataset(args.data)
    keys = dataset.split_images(args.split)[: args.limit_images]
    references = {k: dataset.captions[k] for k in keys}
    model = Captioner(args.model or default_model_dir())
    use_java = False if args.no_java else None

    runs: dict[str, dict] = {}
    if not args.no_baseline:
        baseline = most_frequent_caption(dataset)
        result = score_captions({k: baseline for k in keys}, references, use_java=use_java)
        runs[f'baseline: "{baseline}"'] = {"metrics": result.metrics, "distinct": 1, "skipped": result.skipped}
    searches = {"": model.search}
    if args.with_repeats:
        searches[", repeats allowed"] = SearchDecoder(model.decoder, model.vocab, block_repeats=False)
    for suffix, search in searches.items():
        model.search = search
        for beam in args.beams:
            started = time.perf_counter()
            hyps = generate_split_captions(model, dataset.image_dir, {k: dataset.image_path(k) for k in keys}, beam, length_penalty=args.length_penalty)
            seconds = time.perf_counter() - started
            result = score_captions(hyps, references, use_java=use_java)
            name = ("greedy" if beam == 1 else f"beam {beam} (alpha {args.length_penalty:g})") + suffix
            runs[name] = {
                "metrics": result.metrics,
                "distinct": len(set(hyps.values())),
                "repeats": sum(map(has_repetition, hyps.values())),
                "seconds": seconds,
                "skipped": result.skipped,
            }

    print(f"{model.model_dir} on {args.data} [{args.split}], {len(keys)} images, scores x100 (coco-caption, PTB tokenizer: {result.tokenizer})")
    width = max(len(n) for n in runs) + 2
    print("".ljust(width) + "".join(c.rjust(12) for c in COLUMNS) + "distinct".rjust(10) + "repeats".rjust(9))
    for name, run in runs.items():
        cells = "".join((f"{100 * run['metrics'][c]:.1f}" if c in run["metrics"] else "-").rjust(12) for c in COLUMNS)
        print(name.ljust(width) + cells + str(run["distinct"]).rjust(10) + str(run.get("repeats", "-")).rjust(9))
    for name, run in runs.items():
        for metric, reason in run["skipped"].items():
            print(f"note: {metric} skipped for {name}: {reason}")
            break
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "model": str(model.model_dir), "split": args.split, "images": len(keys), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
