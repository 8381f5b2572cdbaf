"""Telling the user, once, what a dataset load skipped."""

from __future__ import annotations

import logging

from captioner.data.base import CaptionDataset

log = logging.getLogger("captioner.data")


def log_skipped_lines(dataset: CaptionDataset, verbose: bool = False) -> None:
    """Logs the load report's summary (counts and the first examples; all with `verbose`), if any."""
    summary = dataset.report.summary(verbose)
    if summary:
        log.warning("%s", summary)
