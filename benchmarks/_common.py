"""Helpers shared by the benchmark scripts: default paths, the machine line, timing, tables, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the tables

from captioner.defaults import default_model_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "flickr8k"  # ../shared/flickr8k from the repo root
DEFAULT_MODEL = default_model_dir()  # the shipped default model (src/captioner/pretrained/), or $CAPTIONER_MODEL


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark has: --data and --json."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Flickr8k folder (token and split files, images)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    return parser


def _cpuinfo() -> tuple[str | None, set[str] | None]:
    """(CPU model name, CPU flags) of the first processor in /proc/cpuinfo; None where unknown."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name == "model name" and model is None:
                    model = value.strip()
                elif name == "flags" and flags is None:
                    flags = set(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model, flags


def machine() -> dict:
    """What the numbers were measured on: CPU model and AVX-512, CPU count, load average, versions.

    `avx512` is whether the CPU has AVX-512 Foundation (flag avx512f), None if /proc/cpuinfo is
    unreadable (not Linux).
    """
    model, flags = _cpuinfo()
    info = {
        "cpu_model": model or platform.processor() or platform.machine() or "unknown CPU",
        "avx512": None if flags is None else "avx512f" in flags,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info


def machine_line(info: dict | None = None) -> str:
    """One line naming the machine, e.g. "machine: Intel(R) Xeon(R) ... (AVX-512: yes), 2 CPUs, ..."."""
    info = info or machine()
    avx512 = {True: "yes", False: "no", None: "unknown"}[info["avx512"]]
    line = f"machine: {info['cpu_model']} (AVX-512: {avx512}), {info['cpus']} CPUs, load average {info['load_average_1min']} (1 min), Python {info['python']}"
    if "tensorflow" in info:
        line += f", TensorFlow {info['tensorflow']}"
    return line


def print_machine() -> dict:
    """Prints the machine line (every benchmark starts its output with it); returns `machine()`."""
    info = machine()
    print(machine_line(info), flush=True)
    return info


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Timer:
    """Context manager measuring wall-clock seconds: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started


def print_table(headers: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> None:
    """Prints rows as a Markdown table (floats with 3 significant figures, at least one decimal)."""

    def cell(value) -> str:
        if isinstance(value, float):
            if value == 0 or abs(value) >= 100:
                return f"{value:,.0f}"
            return f"{value:#.3g}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in text:
        print("| " + " | ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)) + " |")


def write_json(path: Path | None, results: dict) -> None:
    """Writes `results` (plus the machine description) as indented JSON, if a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"\nwrote {path}")
