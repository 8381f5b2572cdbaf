"""Training throughput: captions/second, `captioner.training` against the seed's way.

Both sides train the same merge decoder (same vocabulary, max length, feature size, embedding and
LSTM sizes) on the same EfficientNet-Lite0 pooled features of the first `--images` training images
of Flickr8k (5 captions each), from the feature store (`captioner.features.FeatureStore`; images
it lacks are encoded into it first, untimed):

- ours: `Trainer.train_step` over `make_dataset` batches in `epoch_order` (one example per
  caption, teacher forcing, padding masked; features streamed from the store by a
  `FeatureReader`, as `captioner train` does), for `--epochs` passes over the captions;
- seed: `captioner.tutorial.define_model` + `create_sequences` / `data_generator` +
  `model.fit(generator, steps_per_epoch=<images>)` (one example per caption prefix, one batch per
  photo, features held in memory), one epoch;
- seed, tutorial model (on the first `--tutorial-images` images; 0 skips it): the same generator
  and `fit`, on the model exactly as the classic tutorial builds it (fresh layers, LSTM returning
  only its last state): this row checks that `define_model` is not a slowed-down baseline.

Each side is warmed up first (its train function traced and run on a few batches), then timed.
Throughput counts captions consumed per second; "next-word predictions/s" counts the words
predicted (one per prefix example for the seed, one per target token for ours), the same total on
both sides.

Usage:
    python benchmarks/train_speed.py [--images 300] [--epochs 5]
"""

from __future__ import annotations

import itertools
import sys
import warnings

import _common

TARGET = 5.0  # ours at least 5x the seed's captions/s


def tutorial_model(vocab_size: int, max_length: int, feature_dim: int, embedding_dim: int, units: int, dropout: float):
    """The classic tutorial's merge model, layer for layer (LSTM without return_sequences)."""
    import keras
    from keras import layers

    photo = keras.Input(shape=(feature_dim,))
    fe2 = layers.Dense(units, activation="relu")(layers.Dropout(dropout)(photo))
    prefix = keras.Input(shape=(max_length,))
    se1 = layers.Embedding(vocab_size, embedding_dim, mask_zero=True)(prefix)
    se3 = layers.LSTM(units)(layers.Dropout(dropout)(se1))
    hidden = layers.Dense(units, activation="relu")(layers.add([fe2, se3]))
    outputs = layers.Dense(vocab_size, activation="softmax")(hidden)
    model = keras.Model([photo, prefix], outputs)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def time_ours(captions, store, vocab, max_length, epochs, sizes) -> dict:
    """Trains with `captioner.training` for `epochs` passes; returns counts and seconds."""
    from captioner.models.base import POOLED, build_decoder, make_config
    from captioner.training import TrainConfig
    from captioner.training.batches import CaptionArrays, FeatureReader, encode_captions, epoch_order, make_dataset
    from captioner.training.loop import Trainer

    keys, image_index, tokens = encode_captions(captions, vocab, max_length)
    arrays = CaptionArrays(image_index, tokens, keys, store.positions(keys))
    reader = FeatureReader(store, arrays.positions, POOLED)
    config = TrainConfig(data="", output="", max_length=max_length, **sizes)
    decoder = build_decoder(make_config("merge", vocab_size=len(vocab), max_length=max_length, feature_dim=store.shape[0], **sizes))
    trainer = Trainer(decoder, config)

    for inputs, targets in itertools.islice(make_dataset(arrays, reader, config.batch_size), 3):  # warm-up: trace
        float(trainer.train_step(inputs, targets))

    losses = []
    with _common.Timer() as timer:
        for epoch in range(epochs):
            order = epoch_order(arrays.lengths, config.batch_size, config.seed, epoch)
            for inputs, targets in make_dataset(arrays, reader, config.batch_size, order):
                losses.append(float(trainer.train_step(inputs, targets)))  # as `train` does: one sync per batch
    n = len(tokens) * epochs
    return {"captions": n, "predictions": int((arrays.lengths - 1).sum()) * epochs, "seconds": timer.seconds, "first_loss": losses[0], "last_loss": losses[-1]}


def time_seed(model, captions, features_by_key, vocab, max_length) -> dict:
    """One epoch of the seed's `data_generator` + `model.fit`; returns counts and seconds."""
    from captioner.tutorial import data_generator
    from captioner.vocab import END, START

    descriptions = {k: [f"{START} {c} {END}" for c in cs] for k, cs in captions.items()}
    photos = {k: features_by_key[k] for k in captions}
    vocab_size = len(vocab)

    warnings.filterwarnings("ignore", message=".*shuffle=True.*generator")  # fit's notice about generators
    warm = dict(itertools.islice(descriptions.items(), 3))  # warm-up: trace the train function
    model.fit(data_generator(warm, photos, vocab, max_length, vocab_size), steps_per_epoch=len(warm), epochs=1, verbose=0)

    generator = data_generator(descriptions, photos, vocab, max_length, vocab_size)
    with _common.Timer() as timer:
        history = model.fit(generator, steps_per_epoch=len(descriptions), epochs=1, verbose=0)
    n = sum(len(cs) for cs in descriptions.values())
    predictions = sum(len(vocab.texts_to_sequences([d])[0]) - 1 for ds in descriptions.values() for d in ds)
    return {"captions": n, "predictions": predictions, "seconds": timer.seconds, "last_loss": float(history.history["loss"][-1])}


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="training images used (5 captions each)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the captions for ours (the seed does one)")
    parser.add_argument(
        "--max-length", type=int, default=None, help="tokens per caption with <start>/<end> (default: the longest training caption, as the seed)"
    )
    parser.add_argument("--min-count", type=int, default=5, help="vocabulary: words seen fewer times become <unk>")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--tutorial-images", type=int, default=100, help="training images for the tutorial-exact seed model (0: skip it)")
    args = parser.parse_args(argv)
    _common.print_machine()

    import keras
    import numpy as np

    from captioner.data import load_dataset
    from captioner.features import FeatureStore, default_cache_dir, update_features
    from captioner.tutorial import define_model
    from captioner.vocab import Vocabulary

    dataset = load_dataset(args.data)
    train = dataset.cleaned("train")
    vocab = Vocabulary.build((c for cs in train.values() for c in cs), min_count=args.min_count)
    max_length = args.max_length or max(len(vocab.encode(c)) for cs in train.values() for c in cs)
    captions = dict(itertools.islice(train.items(), args.images))
    store = FeatureStore(default_cache_dir(dataset.image_dir, "efficientnet_lite0"), "efficientnet_lite0")
    report = update_features(store, {k: dataset.image_path(k) for k in captions})  # untimed; usually all reused
    if report.encoded or report.failed:
        print(f"feature store {store.directory}: {report}", file=sys.stderr)
    if report.failed:
        sys.exit(f"{len(report.failed)} of the images could not be read (first: {next(iter(report.failed.values()))})")
    found, features = store.load(captions)
    features_by_key = dict(zip(found, features.astype(np.float32)))
    feature_dim = features.shape[1]
    sizes = {"embedding_dim": args.embedding_dim, "units": args.units, "dropout": 0.5}
    print(
        f"{len(captions)} images, {sum(map(len, captions.values()))} captions; vocabulary {len(vocab)} words; max length {max_length}; features {feature_dim}",
        file=sys.stderr,
    )

    results = {}
    keras.utils.set_random_seed(0)
    results["ours"] = time_ours(captions, store, vocab, max_length, args.epochs, sizes)
    print(f"ours: {results['ours']['captions'] / results['ours']['seconds']:.0f} captions/s", file=sys.stderr)
    seed_model = define_model(len(vocab), max_length, feature_dim, **sizes)
    results["seed"] = time_seed(seed_model, captions, features_by_key, vocab, max_length)
    print(f"seed: {results['seed']['captions'] / results['seed']['seconds']:.1f} captions/s", file=sys.stderr)
    if args.tutorial_images:
        model = tutorial_model(len(vocab), max_length, feature_dim, **sizes)
        subset = dict(itertools.islice(captions.items(), args.tutorial_images))
        results["seed_tutorial_model"] = time_seed(model, subset, features_by_key, vocab, max_length)

    labels = {
        "ours": "ours: Trainer, teacher forcing, 1 example/caption",
        "seed": "seed: define_model + data_generator + fit",
        "seed_tutorial_model": "seed: tutorial model + data_generator + fit",
    }
    ours_speed = results["ours"]["captions"] / results["ours"]["seconds"]
    rows = []
    for name, r in results.items():
        r["captions_per_s"] = r["captions"] / r["seconds"]
        r["predictions_per_s"] = r["predictions"] / r["seconds"]
        r["ours_speedup"] = ours_speed / r["captions_per_s"]
        rows.append([labels[name], r["captions"], r["seconds"], r["captions_per_s"], r["predictions_per_s"], r["ours_speedup"]])
    machine = _common.machine()
    _common.print_table(
        ["method", "captions", "seconds", "captions/s", "next-word predictions/s", "ours is x faster"],
        rows,
        title=f"Training throughput, {args.images} images, vocabulary {len(vocab)}, max length {max_length}, "
        f"{machine['cpus']} CPUs (load average {machine['load_average_1min']} at the end)",
    )
    speedup = results["seed"]["ours_speedup"]
    print(f"\ntarget: ours >= {TARGET:.0f}x the seed's captions/s: {speedup:.1f}x -> {'met' if speedup >= TARGET else 'NOT met'}")
    output = {
        "benchmark": "train_speed",
        "images": args.images,
        "vocab_size": len(vocab),
        "max_length": max_length,
        "feature_dim": feature_dim,
        **sizes,
        "results": results,
    }
    _common.write_json(args.json, output)
    return output


if __name__ == "__main__":
    main()
