"""Caption metrics (formerly `captioner.evaluation`); see `captioner.metrics.scorers`."""

from captioner.metrics.scorers import *  # noqa: F401,F403
from captioner.metrics.scorers import __all__  # noqa: F401
