"""`EvaluationResult`: the scores of one set of captions, as a dict, JSON or a paper-style table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COCO_METRICS", "METRIC_ORDER", "NLTK_METRICS", "EvaluationResult"]

# The order metrics are reported in (tables, JSON).
COCO_METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE"]
NLTK_METRICS = ["nltk_BLEU-1", "nltk_BLEU-2", "nltk_BLEU-3", "nltk_BLEU-4"]
METRIC_ORDER = COCO_METRICS + NLTK_METRICS


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
