"""Where an export goes: checking the target folder, writing beside it, swapping it in.

No TensorFlow here: `captioner export` checks its target before it loads anything heavy.

Every export folder holds `captioner_export.json` (the manifest). A folder with a manifest is an
earlier export and may be replaced; any other non-empty folder, or a file, is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captioner import __version__, atomic
from captioner.errors import FileError

if TYPE_CHECKING:
    from captioner.artifacts import CaptionerConfig

MANIFEST = "captioner_export.json"
MANIFEST_FORMAT = "captioner-export"
MANIFEST_VERSION = 1


def is_export(directory: str | os.PathLike) -> bool:
    """True if `directory` holds an export's manifest."""
    return (Path(directory) / MANIFEST).is_file()


def check_target(target: str | os.PathLike) -> Path:
    """Refuses a target that is a file, a non-empty folder that is not an earlier export, or unwritable."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise FileError(target, "exists and is not a folder; choose another output path")
    if target.is_dir() and any(target.iterdir()) and not is_export(target):
        raise FileError(target, f"folder is not empty and is not an earlier export (no {MANIFEST}); refusing to replace it")
    parent = target.absolute().parent
    existing = next(p for p in [parent, *parent.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise FileError(target, f"cannot write here ({existing} is not a writable folder)")
    return target


def staging_dir(target: Path) -> Path:
    """A fresh private folder beside `target` (same file system, so the final rename is atomic)."""
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.absolute().parent))


def swap_in(staging: Path, target: Path) -> None:
    """Replaces `target` by the finished `staging` folder: a reader sees the old export or the new one."""
    os.chmod(staging, atomic.default_mode(directory=True))
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        check_target(target)  # still an export (or empty): never move a user's folder aside
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def manifest_header(kind: str, config: CaptionerConfig, input_size: int, beam_size: int, length_penalty: float, max_length: int) -> dict[str, Any]:
    """What every export's manifest starts with: its kind, versions, the model and the search."""
    import tensorflow as tf

    return {
        "kind": kind,
        "captioner_version": __version__,
        "tensorflow_version": tf.__version__,
        "model": {
            "encoder": config.encoder,
            "decoder": config.decoder.decoder,
            "vocab_size": config.decoder.vocab_size,
            "dataset": config.training.get("dataset"),
        },
        "input_size": int(input_size),
        "beam_size": int(beam_size),
        "length_penalty": float(length_penalty),
        "max_length": int(max_length),
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic.write_json(directory / MANIFEST, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **manifest})


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export folder; `FileError` if there is none or it is not one."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileError(directory, f"not a captioner export ({MANIFEST} missing)") from None
    except (OSError, ValueError) as err:
        raise FileError(path, f"unreadable export manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise FileError(path, "not a captioner export manifest")
    if int(manifest.get("version", 0)) > MANIFEST_VERSION:
        raise FileError(path, f"made by a newer captioner (export format {manifest.get('version')}); upgrade captioner")
    return manifest
