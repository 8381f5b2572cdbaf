"""Peak memory of training on spatial grid features: streamed from the store vs loaded whole.

Each mode runs in a fresh process, training the attention decoder for one pass over the train
split's images (one caption per image, so every image's grid is read once):

    model-only  build the decoder and optimizer and take one step: the floor ("the model")
    stream      batches gathered from the memory-mapped feature store (what `captioner train` does)
    in-memory   the whole split's grids loaded into one array first (what a plain cache does)

Target (the architecture issue): stream's peak RSS stays under the model's plus 1.5 GB. Flickr8k's
Lite2 grids are 9x9x1280 float16, about 1.6 GB for 6,000 images (float32 in memory: twice that).

    captioner extract --data ../shared/flickr8k --encoder efficientnet_lite2 --spatial   # once
    python benchmarks/train_memory.py [--images 6000] [--json out.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import _common

MODES = ("model-only", "stream", "in-memory")
BATCH_SIZE = 64


def memory_status() -> dict[str, float]:
    """VmHWM (peak), VmRSS, RssAnon and RssFile of this process, in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def child(mode: str, data: Path, encoder: str, images: int) -> dict:
    import numpy as np

    from captioner.data import load_dataset
    from captioner.features import FeatureStore, default_cache_dir
    from captioner.models.base import build_decoder, make_config
    from captioner.training import TrainConfig
    from captioner.training.batches import CaptionArrays, FeatureReader, encode_captions, make_dataset
    from captioner.training.loop import Trainer
    from captioner.vocab import Vocabulary

    dataset = load_dataset(data)
    captions = dict(list(dataset.cleaned("train").items())[:images])
    store = FeatureStore(default_cache_dir(dataset.image_dir, encoder, spatial=True), encoder, spatial=True, verify=False)
    missing = [k for k in captions if k not in store]
    if missing:
        raise SystemExit(f"{len(missing)} train images have no grid features; run: captioner extract --data {data} --encoder {encoder} --spatial")
    vocab = Vocabulary.build((c for cs in captions.values() for c in cs), min_count=5)
    first = {k: cs[:1] for k, cs in captions.items()}  # one caption per image: each grid read once
    keys, image_index, tokens = encode_captions(first, vocab, 40)
    arrays = CaptionArrays(image_index, tokens, keys, store.positions(keys))
    config = TrainConfig(data=str(data), output="unused", decoder="attention", batch_size=BATCH_SIZE)
    decoder = build_decoder(make_config("attention", vocab_size=len(vocab), max_length=40, feature_dim=store.shape[-1]))
    trainer = Trainer(decoder, config)
    reader = FeatureReader(store, arrays.positions, "grid")
    if mode == "in-memory":

        class InMemory(FeatureReader):
            """The same batches, gathered from one array holding the whole split."""

            def __init__(self, table, shape):
                self.table, self.shape = table, shape

            def read(self, image_index):
                return self.table[image_index]

        reader = InMemory(reader.read(np.arange(len(keys))), reader.shape)  # (I, L, D) float32
    dataset_batches = make_dataset(arrays, reader, BATCH_SIZE)
    if mode == "model-only":
        dataset_batches = dataset_batches.take(1)
    started = time.perf_counter()
    steps = 0
    for inputs, targets in dataset_batches:
        trainer.train_step(inputs, targets)
        steps += 1
    seconds = time.perf_counter() - started
    parameters = sum(int(np.prod(v.shape)) for v in decoder.trainable_variables)
    return {
        "mode": mode,
        "images": len(keys),
        "steps": steps,
        "seconds": round(seconds, 1),
        "parameters": parameters,
        "store_gib": round(len(store) * int(np.prod(store.shape)) * 2 / 2**30, 2),
        **memory_status(),
    }


def main() -> None:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet_lite2")
    parser.add_argument("--images", type=int, default=6000, help="train images to pass over")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--child", choices=MODES, help=argparse_hidden())
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.encoder, args.images)))
        return
    print(_common.machine_line())
    results = []
    for mode in args.modes:
        done = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--data", str(args.data), "--encoder", args.encoder, "--images", str(args.images)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    floor = next((r["VmHWM"] for r in results if r["mode"] == "model-only"), 0.0)
    _common.print_table(
        ["mode", "images", "steps", "seconds", "peak RSS MiB", "peak - model MiB", "RSS at end MiB", "anon MiB", "file-backed MiB"],
        [[r["mode"], r["images"], r["steps"], r["seconds"], r["VmHWM"], r["VmHWM"] - floor, r["VmRSS"], r["RssAnon"], r["RssFile"]] for r in results],
        title=f"Training the attention decoder on {args.encoder} grids ({results[0]['store_gib']} GiB float16 in the store)",
    )
    stream = next((r for r in results if r["mode"] == "stream"), None)
    if stream and floor:
        verdict = "met" if stream["VmHWM"] - floor < 1536 else "NOT met"
        print(f"\nstream: peak {stream['VmHWM'] - floor:,.0f} MiB above the model's; target < 1,536 MiB: {verdict}")
    _common.write_json(args.json, {"results": results})


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
