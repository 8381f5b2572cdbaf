"""One worker process of `captioner train --workers N` (started by `distributed.launch_local`).

Run as ``python -m captioner.training.worker SPEC.json`` with TF_CONFIG set. TensorFlow's start-up
lines are kept off the terminal as in the CLI, so this module imports it only once they are.
Exits 0, or 1 with one line for a user's mistake.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("captioner")


def main(spec_path: str) -> int:
    from captioner.console import quiet_native_stderr, setup_logging

    spec = json.loads(Path(spec_path).read_text())
    with quiet_native_stderr(True):
        setup_logging(False)
        from captioner.errors import UserError
        from captioner.training.config import TrainConfig
        from captioner.training.loop import train

        try:
            train(TrainConfig(**spec["config"]), resume=spec["resume"], progress=spec["progress"], epochs=spec["epochs"], verbose=spec["verbose"])
        except (UserError, OSError) as err:
            text = str(err).strip()
            log.error("captioner: error: %s", text.splitlines()[0] if text else type(err).__name__)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
