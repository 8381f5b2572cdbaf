"""Peak memory and time of `load_image` on large and hostile images, each in a fresh process.

Generates its own images in a temporary folder (nothing is downloaded):

- an ordinary 1000x750 photo-like JPEG (the reference point);
- a 16-bit greyscale PNG of 10000x10000 pixels that compresses to a few hundred KB;
- the largest RGBA PNG under `MAX_PIXELS` (10950x10950), a 10000x10000 palette PNG and an
  8000x8000 16-bit RGB PNG;
- 12000x9000 JPEGs (baseline and progressive), an 8000x6000 CMYK JPEG, a 6000x4000 WebP and a
  9000x9000 8-bit BMP (81 MB);
- a PNG whose header claims 100000x100000 pixels (a decompression bomb).

For each image a fresh Python process imports the module, calls `load_image(path, size)` once and
reports its peak resident memory (VmHWM from /proc/self/status), the peak before the call (the
interpreter with NumPy and Pillow), the wall time of the call, and the module's own estimate of
the decode's memory where it makes one (`_decode_bytes`). Prints a Markdown table and the CPU model.

Usage:
    python benchmarks/image_memory.py [--size 224] [--module path/to/images.py] [--json out.json]

`--module` measures another copy of images.py from before it became a package (for example saved
with `git show 11a5723:src/captioner/images.py > /tmp/images_old.py`), or of images/decode.py; the
default is the installed `captioner.images`. `--size 0` loads at full size (size=None).
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

import _common

_CHILD = r"""
import json, os, sys, time
module_path, image_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3]) or None

def vmhwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if module_path:
    import importlib.util
    spec = importlib.util.spec_from_file_location("images_under_test", module_path)
    images = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = images  # @dataclass looks its module up there
    spec.loader.exec_module(images)
else:
    from captioner.images import decode as images  # the module whose _decode_bytes load_image calls
import numpy, PIL.Image  # both imported before the baseline is taken
estimates = []
if hasattr(images, "_decode_bytes"):
    real = images._decode_bytes
    def recording(*args, **kwargs):
        estimates.append(real(*args, **kwargs))
        return estimates[-1]
    images._decode_bytes = recording
baseline = vmhwm_mib()
started = time.perf_counter()
try:
    out = images.load_image(image_path, size)
    result = {"ok": True, "result": "x".join(map(str, out.shape))}
except images.ImageError as e:
    result = {"ok": False, "result": e.problem}
except MemoryError:
    result = {"ok": False, "result": "MemoryError"}
result.update(seconds=time.perf_counter() - started, baseline_mib=baseline, peak_mib=vmhwm_mib(),
              estimate_mib=estimates[-1] / 2**20 if estimates else None)
print(json.dumps(result))
"""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, bit_depth: int, color_type: int, palette: bytes | None = None) -> None:
    """Streams a PNG whose rows all repeat the first (random) row: huge image, small file.

    Row 0 is stored unfiltered, every later row with the Up filter and all-zero bytes, so the
    compressed data is tiny while the decoder still has to inflate and unfilter every pixel.
    """
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row_bytes = width * channels * bit_depth // 8
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256 if color_type != 3 else len(palette) // 3, row_bytes, dtype=np.uint8).tobytes()
    if color_type in (4, 6):  # keep alpha varied but mostly opaque
        first_array = np.frombuffer(first, dtype=np.uint8).copy().reshape(width, -1)
        first_array[:, -(bit_depth // 8) :] |= 0x80
        first = first_array.tobytes()
    zero_row = b"\x02" + bytes(row_bytes)
    compressor = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)))
        if palette is not None:
            f.write(_png_chunk(b"PLTE", palette))
        pending = [compressor.compress(b"\x00" + first)]
        for _ in range(height - 1):
            pending.append(compressor.compress(zero_row))
        pending.append(compressor.flush())
        f.write(_png_chunk(b"IDAT", b"".join(pending)))
        f.write(_png_chunk(b"IEND", b""))


def photo_like(width: int, height: int, seed: int = 0):
    """A smooth random image with some fine grain: compresses like a photo, not like noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 100), max(2, width // 100), 3), dtype=np.uint8))
    img = coarse.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((min(width, 2048), min(height, 2048)), 24).convert("RGB")
    for top in range(0, height, grain.height):
        for left in range(0, width, grain.width):
            box = (left, top, min(left + grain.width, width), min(top + grain.height, height))
            region = img.crop(box)
            img.paste(Image.blend(region, grain.crop((0, 0, region.width, region.height)), 0.15), box)
    return img


def generate(folder: Path) -> dict[str, Path]:
    """Writes the test images; returns name -> path."""
    from PIL import Image

    paths: dict[str, Path] = {}

    def path(name: str) -> Path:
        paths[name] = folder / name
        return paths[name]

    photo_like(1000, 750).save(path("photo_1000x750.jpg"), quality=90)
    write_png(path("grey16_10000x10000.png"), 10000, 10000, 16, 0)
    write_png(path("rgba_10950x10950.png"), 10950, 10950, 8, 6)
    write_png(path("palette_10000x10000.png"), 10000, 10000, 8, 3, palette=bytes(range(256)) * 3)
    write_png(path("rgb16_8000x8000.png"), 8000, 8000, 16, 2)
    big = photo_like(12000, 9000, seed=1)
    big.save(path("jpeg_12000x9000.jpg"), quality=90)
    big.save(path("progressive_12000x9000.jpg"), quality=90, progressive=True)
    del big
    photo_like(8000, 6000, seed=2).convert("CMYK").save(path("cmyk_8000x6000.jpg"), quality=90)
    photo_like(6000, 4000, seed=3).save(path("webp_6000x4000.webp"), quality=80, method=0)
    photo_like(9000, 9000, seed=4).convert("P", palette=Image.Palette.WEB).save(path("bmp8_9000x9000.bmp"))
    with open(path("bomb_100000x100000.png"), "wb") as f:
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
        f.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(bytes(16))) + _png_chunk(b"IEND", b""))
    return paths


def measure(module: str, image: Path, size: int, timeout: float) -> dict:
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, module, str(image), str(size)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "result": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"ok": False, "result": f"crashed ({done.returncode}): {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="target size passed to load_image (0: full size)")
    parser.add_argument("--module", default="", help="path of an images.py to measure instead of captioner.images")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="measure only images whose name contains one of these")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per image")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="image_memory_") as tmp:
        print("generating images...", file=sys.stderr)
        images = generate(Path(tmp))
        for name, image in images.items():
            if args.only and not any(part in name for part in args.only):
                continue
            print(f"  {name}", file=sys.stderr)
            r = measure(args.module, image, args.size, args.timeout)
            r.update(image=name, file_bytes=image.stat().st_size)
            results.append(r)
            decode = r["peak_mib"] - r["baseline_mib"] if "peak_mib" in r else None
            rows.append(
                [
                    name,
                    f"{r['file_bytes'] / 1e6:.2f}",
                    r.get("peak_mib", "-"),
                    decode if decode is not None else "-",
                    r["estimate_mib"] if r.get("estimate_mib") is not None else "-",
                    r.get("seconds", "-"),
                    r["result"][:70],
                ]
            )
    cpu = cpu_model()
    title = f"load_image(path, {args.size or None}) with {args.module or 'captioner.images'}; peak RSS per fresh process (MiB); CPU: {cpu}"
    _common.print_table(["image", "file MB", "peak MiB", "decode MiB", "estimate MiB", "seconds", "result"], rows, title)
    summary = {
        "size": args.size or None,
        "module": args.module or "captioner.images",
        "cpu_model": cpu,
        "python": platform.python_version(),
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
