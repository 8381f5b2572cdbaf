"""Slow checks on real Flickr8k photos (a few hundred); skipped where ../shared/flickr8k is absent."""

import collections

import numpy as np
import pytest

from captioner.defaults import default_model_dir
from captioner.metrics import score_captions
from captioner.pipeline import Captioner
from captioner.report import generate_split_captions
from captioner.training import TrainConfig, train
from captioner.training.loop import CHECKPOINT_FILE

pytestmark = pytest.mark.slow


def test_training_on_real_photos_learns_image_dependent_captions(flickr8k_dir, tmp_path):
    config = TrainConfig(
        data=str(flickr8k_dir), output=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), limit_images=300, epochs=3, batch_size=32, min_word_count=3
    )
    model_dir = train(config, progress=False)
    history = np.load(tmp_path / "run" / CHECKPOINT_FILE)["progress"].item()
    assert '"epoch": 3' in history
    captioner = Captioner(model_dir)
    dataset_keys = sorted(p.name for p in (flickr8k_dir / "Flicker8k_Dataset").iterdir())[:40]
    captions = [hyps[0].caption for _, hyps in captioner.caption_files([flickr8k_dir / "Flicker8k_Dataset" / k for k in dataset_keys], beam_size=1)]
    assert all(c.split() for c in captions)
    assert len(set(captions)) > 1  # depends on the image, not one memorised sentence


def test_shipped_model_beats_the_most_frequent_caption(flickr8k_dataset, tmp_path):
    keys = flickr8k_dataset.split_images("dev")[:200]
    references = {k: flickr8k_dataset.captions[k] for k in keys}
    counts = collections.Counter(c for caps in flickr8k_dataset.cleaned("train").values() for c in caps)
    baseline = score_captions({k: counts.most_common(1)[0][0] for k in keys}, references, use_java=False, nltk=False)
    captioner = Captioner(default_model_dir())
    hyps = generate_split_captions(
        captioner, flickr8k_dataset.image_dir, {k: flickr8k_dataset.image_path(k) for k in keys}, beam_size=3, cache_root=str(tmp_path)
    )
    ours = score_captions(hyps, references, use_java=False, nltk=False)
    assert ours.metrics["BLEU-4"] > baseline.metrics["BLEU-4"] + 0.05
    assert ours.metrics["CIDEr-D"] > baseline.metrics["CIDEr-D"] + 0.2
    assert len(set(hyps.values())) > 100
