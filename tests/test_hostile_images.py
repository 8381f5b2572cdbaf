"""Hostile input for load_image / scan_images: every file is generated here, none is downloaded.

The contract for each case: `load_image(path, 224)` returns a (224, 224, 3) uint8 array or raises
`ImageError` whose message is one line starting with "<path>: "; it never hangs and never raises
anything else. Cases with a known answer also check the message.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.images import MAX_DECODE_BYTES, MAX_FILE_BYTES, MAX_PIXELS, ImageError, load_image, scan_images

SIZE = 224
TIMEOUT_S = 10.0
OK = "ok"  # the case must decode
EITHER = None  # decoding or a clean ImageError are both fine


def call_with_timeout(fn: Callable[[], object], timeout: float = TIMEOUT_S) -> object:
    """fn()'s result or the exception it raised; fails the test if it runs past `timeout`.

    A daemon thread: if the call hangs (a FIFO that waits for a writer), the test fails instead
    of hanging, and the thread cannot keep pytest from exiting.
    """
    outcome: list[object] = []

    def run():
        try:
            outcome.append(fn())
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"still running after {timeout} s")
    return outcome[0]


def check_contract(path: Path | str) -> np.ndarray | ImageError:
    outcome = call_with_timeout(lambda: load_image(path, SIZE))
    if isinstance(outcome, np.ndarray):
        assert outcome.shape == (SIZE, SIZE, 3) and outcome.dtype == np.uint8
        return outcome
    assert isinstance(outcome, ImageError), f"{type(outcome).__name__}: {outcome}"
    message = str(outcome)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    return outcome


# --- builders --------------------------------------------------------------------------------


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))


def write_big_png(path: Path, width: int, height: int, bit_depth: int, color_type: int) -> Path:
    """A valid PNG of width x height whose rows repeat one random row (tiny file, full decode)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row_bytes = width * channels * bit_depth // 8
    first = np.random.default_rng(0).integers(0, 256, row_bytes, dtype=np.uint8)
    if color_type in (4, 6):
        first.reshape(width, channels * bit_depth // 8)[:, -1] |= 0x80  # mostly opaque
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(b"\x00" + first.tobytes())]
    zero_row = b"\x02" + bytes(row_bytes)  # "Up" filter, no change: the row above repeated
    parts.extend(compressor.compress(zero_row) for _ in range(height - 1))
    parts.append(compressor.flush())
    path.write_bytes(png_header(width, height, bit_depth, color_type) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def image_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def photo(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def with_jpeg_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """Inserts a marker segment right after SOI."""
    return jpeg[:2] + struct.pack(">HH", marker, len(payload) + 2) + payload + jpeg[2:]


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrites the frame header (SOF0/SOF2) to claim width x height."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no frame header")


def webp_lossless_header(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    payload = b"\x2f" + struct.pack("<I", bits) + bytes(32)
    chunk_data = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk_data)) + b"WEBP" + chunk_data


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_fifo(tmp: Path) -> Path:
    path = tmp / "x.jpg"
    os.mkfifo(path)
    return path


def make_socket(tmp: Path) -> Path:
    path = tmp / "s.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


def make_loop(tmp: Path) -> Path:
    os.symlink(tmp / "loop_b.jpg", tmp / "loop_a.jpg")
    os.symlink(tmp / "loop_a.jpg", tmp / "loop_b.jpg")
    return tmp / "loop_a.jpg"


def make_broken_link(tmp: Path) -> Path:
    os.symlink(tmp / "gone.jpg", tmp / "broken.jpg")
    return tmp / "broken.jpg"


def make_good_link(tmp: Path) -> Path:
    target = write(tmp / "target.png", image_bytes(photo(), "PNG"))
    os.symlink(target, tmp / "link.jpg")
    return tmp / "link.jpg"


def make_directory(tmp: Path) -> Path:
    (tmp / "folder.jpg").mkdir()
    return tmp / "folder.jpg"


def make_sparse_huge(tmp: Path) -> Path:
    path = tmp / "huge.jpg"
    with open(path, "wb") as f:
        f.write(image_bytes(photo(), "JPEG"))
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    return path


def make_truncated_jpeg(tmp: Path) -> Path:
    data = image_bytes(Image.fromarray(np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8)), "JPEG")
    return write(tmp / "cut.jpg", data[: len(data) // 2])


def make_truncated_png(tmp: Path) -> Path:
    data = image_bytes(Image.fromarray(np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)), "PNG")
    return write(tmp / "cut.png", data[: len(data) // 2])


def make_bad_crc_png(tmp: Path) -> Path:
    data = bytearray(image_bytes(photo(), "PNG"))
    data[29] ^= 0xFF  # last byte of IHDR's CRC
    return write(tmp / "crc.png", bytes(data))


def make_bad_idat_crc_png(tmp: Path) -> Path:
    data = bytearray(image_bytes(photo(), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF
    return write(tmp / "idat_crc.png", bytes(data))


def make_corrupt_exif(tmp: Path) -> Path:
    garbage = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + bytes(range(256)) * 4
    return write(tmp / "exif.jpg", with_jpeg_segment(image_bytes(photo(), "JPEG"), 0xFFE1, garbage))


def make_bad_orientation(tmp: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 99  # not an orientation
    return write(tmp / "orientation.jpg", image_bytes(photo(), "JPEG", exif=exif))


def make_animated_webp(tmp: Path) -> Path:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return write(tmp / "anim.webp", image_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100))


def make_ztxt_bomb(tmp: Path) -> Path:
    data = image_bytes(photo(), "PNG")
    bomb = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(50_000_000), 9))
    return write(tmp / "ztxt.png", data[:33] + bomb + data[33:])


def make_progressive_bomb(tmp: Path) -> Path:
    # A real progressive 4:4:4 JPEG whose header claims 12000x10000 (under MAX_PIXELS): libjpeg
    # would keep 720 MB of coefficients, so it is refused before decoding.
    small = image_bytes(photo(), "JPEG", progressive=True, subsampling=0)
    return write(tmp / "progressive.jpg", jpeg_with_size(small, 12000, 10000))


def make_big_webp(tmp: Path) -> Path:
    # 36 megapixels of one colour (a 38-byte file): libwebp's canvases plus Pillow's copies would
    # take about 580 MB, over MAX_DECODE_BYTES, so it is refused before decoding.
    return write(tmp / "big.webp", image_bytes(Image.new("RGB", (6000, 6000), (10, 20, 30)), "WEBP", lossless=True, method=0))


CASES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    # name: (builder, expected: OK, EITHER, or a substring of the problem)
    "fifo": (make_fifo, "not a regular file (fifo)"),
    "socket": (make_socket, "not a regular file (socket)"),
    "directory_named_jpg": (make_directory, "is a directory"),
    "symlink_loop": (make_loop, "symbolic link loop"),
    "broken_symlink": (make_broken_link, "broken symbolic link"),
    "symlink_to_image": (make_good_link, OK),
    "zero_bytes": (lambda t: write(t / "empty.jpg", b""), "empty file"),
    "over_byte_cap_sparse": (make_sparse_huge, f"file too large ({MAX_FILE_BYTES + 1} bytes; limit {MAX_FILE_BYTES})"),
    "truncated_jpeg": (make_truncated_jpeg, "truncated image file"),
    "truncated_png": (make_truncated_png, EITHER),
    "png_signature_only": (lambda t: write(t / "sig.png", b"\x89PNG\r\n\x1a\n"), EITHER),
    "jpeg_soi_eoi_only": (lambda t: write(t / "soi.jpg", b"\xff\xd8\xff\xd9"), EITHER),
    "text_named_jpg": (lambda t: write(t / "notes.jpg", b"just some text\n"), "not a JPEG, PNG, BMP or WebP image"),
    "html_named_png": (lambda t: write(t / "page.png", b"<!DOCTYPE html><html><body>hi</body></html>\n"), "not a JPEG, PNG, BMP or WebP image"),
    "pdf_header": (lambda t: write(t / "doc.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"), "not a JPEG, PNG, BMP or WebP image"),
    "gif": (lambda t: write(t / "anim.gif", image_bytes(photo(), "GIF")), "not a JPEG, PNG, BMP or WebP image"),
    "tiff_named_jpg": (lambda t: write(t / "scan.jpg", image_bytes(photo(), "TIFF")), "not a JPEG, PNG, BMP or WebP image"),
    "png_header_bomb": (
        lambda t: write(t / "bomb.png", png_header(100_000, 100_000) + chunk(b"IDAT", zlib.compress(bytes(16)))),
        "image too large (10000000000 pixels",
    ),
    "jpeg_header_bomb": (lambda t: write(t / "bomb.jpg", jpeg_with_size(image_bytes(photo(), "JPEG"), 65000, 65000)), "image too large (4225000000 pixels"),
    "webp_header_bomb": (lambda t: write(t / "bomb.webp", webp_lossless_header(10000, 10000)), EITHER),
    "progressive_coefficient_bomb": (make_progressive_bomb, "image too large to decode (12000x10000 RGB needs about"),
    "webp_over_memory_budget": (make_big_webp, "image too large to decode (6000x6000 RGB needs about"),
    "png_tiny_idat_big_header": (
        lambda t: write(t / "thin.png", png_header(9000, 9000) + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b"")),
        EITHER,
    ),
    "png_zero_width": (lambda t: write(t / "zero.png", png_header(0, 10) + chunk(b"IEND", b"")), EITHER),
    "sixteen_bit_huge_png": (lambda t: write_big_png(t / "deep.png", 10000, 10000, 16, 0), OK),
    "one_by_one": (lambda t: write(t / "dot.png", image_bytes(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG")), OK),
    "one_by_10000": (lambda t: write(t / "line.png", image_bytes(Image.new("L", (1, 10000), 128), "PNG")), OK),
    "10000_by_one": (lambda t: write(t / "wide.png", image_bytes(Image.new("RGB", (10000, 1), (1, 2, 3)), "PNG")), OK),
    "cmyk_jpeg": (lambda t: write(t / "cmyk.jpg", image_bytes(photo().convert("CMYK"), "JPEG")), OK),
    "corrupt_exif": (make_corrupt_exif, OK),
    "bad_orientation_value": (make_bad_orientation, OK),
    "animated_webp": (make_animated_webp, OK),
    "png_bad_header_crc": (make_bad_crc_png, EITHER),
    "png_bad_idat_crc": (make_bad_idat_crc_png, EITHER),
    "ztxt_bomb": (make_ztxt_bomb, EITHER),
    "bmp_rle_header_bomb": (
        lambda t: write(
            t / "rle.bmp",
            b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 8, 1, 0, 0, 0, 0, 0) + bytes(1024) + b"\x00\x01",
        ),
        EITHER,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(tmp_path, name):
    build, expected = CASES[name]
    path = build(tmp_path)
    outcome = check_contract(path)
    if expected == OK:
        assert isinstance(outcome, np.ndarray), f"refused: {outcome}"
    elif expected is not None:
        assert isinstance(outcome, ImageError), "decoded an image that should have been refused"
        assert expected in outcome.problem, outcome.problem


def test_dev_zero_is_refused_before_reading():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    outcome = check_contract("/dev/zero")
    assert isinstance(outcome, ImageError)
    assert str(outcome) == "/dev/zero: not a regular file (character device)"


def test_fifo_swapped_in_after_the_check_cannot_block(tmp_path, monkeypatch):
    # The stat happens first; if a FIFO appears by the time of the open, the non-blocking open
    # and the fstat of the open file still refuse it instead of waiting for a writer.
    path = tmp_path / "x.jpg"
    path.write_bytes(image_bytes(photo(), "JPEG"))
    real_stat = os.stat
    swapped = []

    def stat_then_swap(target, *args, **kwargs):
        result = real_stat(target, *args, **kwargs)
        if Path(target) == path and not swapped:
            swapped.append(True)
            path.unlink()
            os.mkfifo(path)
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)  # the os module that captioner.images.files uses
    outcome = check_contract(path)
    assert swapped
    assert isinstance(outcome, ImageError) and outcome.problem == "not a regular file (fifo)"


def test_nul_in_the_path(tmp_path):
    outcome = check_contract(f"{tmp_path}/bad\x00name.jpg")
    assert isinstance(outcome, ImageError) and outcome.problem == "invalid file name"


def test_proc_file_that_reports_size_zero_is_read_and_refused():
    # /proc files are "regular" with st_size 0: reading must not trust the size (nor hang).
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc")
    outcome = check_contract("/proc/self/status")
    assert isinstance(outcome, ImageError) and outcome.problem == "not a JPEG, PNG, BMP or WebP image"


def test_bytes_over_the_cap_are_refused():
    # An in-memory upload (an HTTP body) gets the same cap as a file.
    data = bytes(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match=rf"^upload\.jpg: file too large \({MAX_FILE_BYTES + 1} bytes"):
        load_image(data, SIZE, name="upload.jpg")


def test_full_size_decode_over_the_memory_budget_is_refused_before_decoding():
    # 10000x10000 RGBA at full size: decoded image, RGB result and scratch exceed the budget.
    data = png_header(10_000, 10_000, 8, 6) + chunk(b"IDAT", zlib.compress(bytes(16)))
    assert 10_000 * 10_000 <= MAX_PIXELS
    with pytest.raises(
        ImageError,
        match=r"^big\.png: image too large to decode \(10000x10000 RGBA needs about \d+ MiB; "
        rf"limit {MAX_DECODE_BYTES // 2**20} MiB\)$",
    ):
        load_image(data, None, name="big.png")


def test_a_folder_of_hostile_files_lists_without_failing(tmp_path):
    for name, (build, _) in CASES.items():
        if name in ("sixteen_bit_huge_png", "over_byte_cap_sparse"):
            continue  # slow or big; covered above
        folder = tmp_path / name
        folder.mkdir()
        build(folder)
    listing = call_with_timeout(lambda: scan_images(tmp_path, recursive=True))
    reasons = {path.name: reason for path, reason in listing.skipped}
    assert reasons["x.jpg"] == "not a regular file (fifo)"
    assert reasons["s.png"] == "not a regular file (socket)"
    assert reasons["loop_a.jpg"].startswith("symbolic link loop") and reasons["loop_b.jpg"].startswith("symbolic link loop")
    assert reasons["broken.jpg"].startswith("broken symbolic link")
    names = {p.name for p in listing.paths}
    assert "link.jpg" in names and "folder.jpg" not in names and not names & set(reasons)
    for path in listing.paths:
        check_contract(path)


_PEAK_SCRIPT = r"""
import sys
from captioner.images import load_image
out = load_image(sys.argv[1], 224)
assert out.shape == (224, 224, 3), out.shape
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_worst_accepted_image_decodes_under_one_gigabyte(tmp_path):
    # The largest RGBA PNG under MAX_PIXELS: 4 bytes per pixel is the biggest decoded size of an
    # accepted PNG, so it is the largest decode load_image(path, 224) lets through.
    side = int(MAX_PIXELS**0.5) // 10 * 10
    path = write_big_png(tmp_path / "worst.png", side, side, 8, 6)
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    peak_bytes = int(done.stdout.split()[-1]) * 1024
    assert peak_bytes < 1_000_000_000, f"peak RSS {peak_bytes / 2**20:.0f} MiB"
