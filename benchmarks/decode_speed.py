"""Decoding speed: captions/second for greedy and beam search, from cached image features.

Loads a trained captioner (`captioner.artifacts.load_captioner`), wraps its decoder in a
`captioner.decoding.SearchDecoder`, and reads the Flickr8k dev images' features (pooled, or the
grid for a decoder that attends) from the feature store of the model's encoder, in memory before
any timing (decode only: no image loading, no encoder). Of the dev images used, those the store
lacks are encoded into it first (`captioner.features.update_features`, untimed). For each search (greedy, beam 3,
beam 5 by default) and each batch size (1 and 64):

- one untimed warm-up call (the compiled search traces once per input signature);
- then `--calls-at-1` calls of one image each, or `--batches` calls of a whole batch, every call
  on different images. The searches take turns call by call on the same images, so a busy
  machine slows them alike.

Reports captions/s (captions over total time), the median milliseconds per call, the mean
caption length, and the ratio of beam 3's median time per call to greedy's at batch 1 (target:
under 2).

Usage:
    python benchmarks/decode_speed.py [--model DIR] [--beams 1 3 5] [--batch-sizes 1 64]

The default model is the shipped one (`captioner.defaults.default_model_dir()`).
"""

from __future__ import annotations

import sys

import _common

TARGET_RATIO = 2.0  # beam 3 under 2x greedy's time per caption at batch 1


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(_common.DEFAULT_MODEL), help="trained captioner directory or shipped model name")
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 3, 5], help="beam sizes; 1 is greedy search")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--calls-at-1", type=int, default=50, help="timed calls at batch size 1")
    parser.add_argument("--batches", type=int, default=5, help="timed calls at batch sizes above 1")
    args = parser.parse_args(argv)
    _common.print_machine()

    import numpy as np

    from captioner.artifacts import ModelDirError, load_captioner
    from captioner.data import load_dataset
    from captioner.decoding import SearchDecoder
    from captioner.defaults import resolve_model
    from captioner.features import FeatureStore, default_cache_dir, update_features
    from captioner.models.base import GRID
    from captioner.training.batches import FeatureReader

    args.model = resolve_model(args.model)
    try:
        decoder, vocab, config = load_captioner(args.model)
    except ModelDirError as err:
        sys.exit(f"{err}\n(train one with `captioner train` and pass --model DIR)")
    search = SearchDecoder(decoder, vocab)

    dataset = load_dataset(args.data)
    keys = dataset.split_images("dev")
    needed = max(args.calls_at_1 if b == 1 else b * args.batches for b in args.batch_sizes) + max(args.batch_sizes)
    if len(keys) < needed:
        sys.exit(f"the dev split has {len(keys)} images, {needed} needed; lower --calls-at-1 or --batches")
    keys = keys[:needed]
    grid = decoder.features == GRID
    store = FeatureStore(
        default_cache_dir(dataset.image_dir, config.encoder, grid, config.encoder_weights), config.encoder, config.encoder_weights, spatial=grid
    )
    report = update_features(store, {k: dataset.image_path(k) for k in keys})  # untimed; usually all reused
    if report.encoded or report.failed:
        print(f"feature store {store.directory}: {report}", file=sys.stderr)
    found = [k for k in keys if k in store]
    features = FeatureReader(store, store.positions(found), decoder.features).read(np.arange(len(found)))  # float32
    if len(features) < needed:
        sys.exit(f"{len(features)} dev images readable, {needed} needed; lower --calls-at-1 or --batches")
    print(
        f"model {args.model}: vocabulary {config.decoder.vocab_size}, max length {config.decoder.max_length}; {len(features)} dev images' features",
        file=sys.stderr,
    )

    # Searches are interleaved call by call on the same images, so background load, which varies
    # over time, affects them alike and their ratios stay meaningful on a busy machine.
    results = []
    for batch_size in args.batch_sizes:
        for beam in args.beams:
            search.caption(features[-batch_size:], beam_size=beam)  # warm-up, on images not timed
        calls = args.calls_at_1 if batch_size == 1 else args.batches
        seconds: dict[int, list[float]] = {beam: [] for beam in args.beams}
        words = dict.fromkeys(args.beams, 0)
        for i in range(calls):
            batch = features[i * batch_size : (i + 1) * batch_size]
            for beam in args.beams:
                with _common.Timer() as timer:
                    hypotheses = search.caption(batch, beam_size=beam)
                seconds[beam].append(timer.seconds)
                words[beam] += sum(len(h[0].caption.split()) for h in hypotheses)
        for beam in args.beams:
            total, captions = sum(seconds[beam]), calls * batch_size
            results.append(
                {
                    "search": "greedy" if beam == 1 else f"beam {beam}",
                    "beam_size": beam,
                    "batch_size": batch_size,
                    "calls": calls,
                    "captions": captions,
                    "seconds": total,
                    "median_ms_per_call": _common.median(seconds[beam]) * 1000,
                    "captions_per_s": captions / total,
                    "mean_words": words[beam] / captions,
                }
            )

    machine = _common.machine()
    _common.print_table(
        ["search", "batch", "calls", "captions", "seconds", "median ms/call", "captions/s", "mean words"],
        [
            [r["search"], r["batch_size"], r["calls"], r["captions"], r["seconds"], r["median_ms_per_call"], r["captions_per_s"], r["mean_words"]]
            for r in results
        ],
        title=f"Decoding from cached features, {machine['cpus']} CPUs (load average {machine['load_average_1min']} at the end)",
    )
    output = {"benchmark": "decode_speed", "model": str(args.model), "results": results}
    at_1 = {r["beam_size"]: r for r in results if r["batch_size"] == 1}
    if 1 in at_1 and 3 in at_1:
        ratio = at_1[3]["median_ms_per_call"] / at_1[1]["median_ms_per_call"]
        total_ratio = at_1[3]["seconds"] / at_1[1]["seconds"]
        output["beam3_over_greedy_at_batch_1"] = {"median": ratio, "total": total_ratio}
        print(
            f"\nbeam 3 / greedy time ratio at batch 1: {ratio:.2f} by median time per call, {total_ratio:.2f} by total time "
            f"(target < {TARGET_RATIO:.0f} by median: {'met' if ratio < TARGET_RATIO else 'NOT met'})"
        )
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
