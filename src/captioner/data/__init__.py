"""Caption datasets (moved to a package; see `captioner.data.base`)."""

from captioner.data.base import *  # noqa: F401,F403
from captioner.data.base import MAX_MESSAGES, __all__  # noqa: F401
