"""load_image / list_images on every kind of file a user might hand us, good and bad."""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from captioner.images import IMAGE_EXTENSIONS, MAX_DECODE_BYTES, MAX_FILE_BYTES, MAX_PIXELS, ImageError, ImageListing, list_images, load_image, scan_images

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def two_halves(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another: shows orientation and squashing."""
    w, h = size
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, w // 2, h))
    return img


def close(pixel, expected, tolerance=12) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height (the pixel data is tiny)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# --- content -----------------------------------------------------------------------------------


def test_png_pixels_are_exact(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("ext, kwargs", [(".jpg", {"quality": 95}), (".jpeg", {}), (".bmp", {}), (".webp", {"lossless": True}), (".JPG", {})])
def test_formats_keep_colours_in_place(tmp_path, ext, kwargs):
    path = tmp_path / f"halves{ext}"
    two_halves().save(path, format=Image.registered_extensions()[ext.lower()], **kwargs)
    out = load_image(path)
    assert out.shape == (20, 40, 3)
    assert close(out[10, 5], RED) and close(out[10, 35], BLUE)


def test_size_squashes_the_whole_image_without_cropping(tmp_path):
    # A wide image with red only in its leftmost quarter: a centre crop would lose the red.
    img = Image.new("RGB", (200, 50), BLUE)
    img.paste(RED, (0, 0, 50, 50))
    path = tmp_path / "wide.png"
    img.save(path)
    out = load_image(path, 32)
    assert out.shape == (32, 32, 3)
    assert close(out[16, 2], RED) and close(out[16, 5], RED)
    assert close(out[16, 12], BLUE) and close(out[16, 30], BLUE)
    assert close(out[0, 2], RED) and close(out[31, 2], RED)  # full height kept too


def test_size_on_a_large_jpeg_matches_a_full_decode(tmp_path):
    # Large JPEGs are decoded at reduced scale first; the result must look the same.
    path = tmp_path / "big.jpg"
    two_halves((1600, 1200)).save(path, quality=95)
    out = load_image(path, 64)
    reference = np.array(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 2.0
    assert close(out[32, 10], RED) and close(out[32, 54], BLUE)


def test_size_equal_to_the_image_changes_nothing(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    path = tmp_path / "square.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(load_image(path, 24), pixels)


def test_bytes_source(tmp_path):
    out = load_image(png_bytes(two_halves()), 8)
    assert out.shape == (8, 8, 3) and close(out[4, 0], RED) and close(out[4, 7], BLUE)


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape, left red; orientation 6 means "rotate 90 degrees clockwise to display",
    # which puts the red half on top of a portrait image.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    two_halves((40, 20)).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    assert close(out[5, 10], RED) and close(out[35, 10], BLUE)


def test_greyscale_becomes_grey_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (5, 4), 77).save(path)
    out = load_image(path)
    assert out.shape == (4, 5, 3) and (out == 77).all()


def test_one_bit_image(tmp_path):
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 4, 8))
    path = tmp_path / "bits.png"
    img.save(path)
    out = load_image(path)
    assert (out[:, :4] == 255).all() and (out[:, 4:] == 0).all()


def test_palette_image(tmp_path):
    path = tmp_path / "palette.png"
    two_halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
    out = load_image(path)
    assert close(out[10, 5], RED, 0) and close(out[10, 35], BLUE, 0)


def test_palette_transparency_becomes_white(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (0, 0, 5, 10))  # left red, right colour 0 which is transparent
    path = tmp_path / "palette_transparent.png"
    img.save(path, transparency=0)
    out = load_image(path)
    assert close(out[5, 2], RED, 0) and close(out[5, 8], WHITE, 0)


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((2, 3, 4), dtype=np.uint8)
    pixels[:, 0] = (255, 0, 0, 255)  # opaque red
    pixels[:, 1] = (0, 0, 0, 0)  # fully transparent (black under it must not show)
    pixels[:, 2] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "alpha.png"
    Image.fromarray(pixels, "RGBA").save(path)
    out = load_image(path)
    assert close(out[0, 0], RED, 0)
    assert close(out[0, 1], WHITE, 0)
    assert close(out[0, 2], (127, 127, 255), 2)


def test_greyscale_with_alpha(tmp_path):
    pixels = np.array([[[40, 255], [40, 0]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(pixels, "LA").save(path)
    out = load_image(path)
    assert close(out[0, 0], (40, 40, 40), 0) and close(out[0, 1], WHITE, 0)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    img = Image.new("CMYK", (20, 10), (255, 0, 0, 0))  # pure cyan ink
    img.paste((0, 0, 0, 0), (10, 0, 20, 10))  # no ink: white paper
    img.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_image(path)
    assert close(out[5, 2], (0, 255, 255)) and close(out[5, 17], WHITE)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    assert (out[..., 0] == out[..., 2]).all()


def test_sixteen_bit_scaling_rounds_like_floating_point_for_every_value():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = load_image(png_bytes(Image.fromarray(values)))
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_big_image_is_reduced_first_but_matches_a_full_lanczos(orientation):
    # 1999x1333 is reduced by whole factors (with partial last blocks) before Lanczos; the result
    # must match a full-resolution Lanczos of the upright image, for every EXIF orientation.
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((1999, 1333), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    img.save(buffer, "PNG", exif=exif, compress_level=1)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))
    reference = np.asarray(upright.convert("RGB").resize((224, 224), Image.Resampling.LANCZOS), dtype=int)
    out = load_image(buffer.getvalue(), 224)
    assert np.abs(out.astype(int) - reference).mean() < 0.5
    assert np.abs(out.astype(int) - reference).max() <= 8


def test_big_transparent_image_reduced_first_is_composited_on_white():
    pixels = np.zeros((1400, 1400, 4), dtype=np.uint8)
    pixels[:, :700] = (255, 0, 0, 255)  # opaque red left, fully transparent black right
    out = load_image(png_bytes(Image.fromarray(pixels, "RGBA")), 64)
    assert close(out[32, 5], RED, 2) and close(out[32, 60], WHITE, 2)


def test_jpeg_drafted_with_a_partial_last_block_matches_a_full_decode(tmp_path):
    # 1999x1333 at size 224: libjpeg decodes at 1/2 scale (1000x667, last row and column partial);
    # resampling from the exact covered region keeps the result close to a full decode.
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((1999, 1333), Image.Resampling.BICUBIC)
    path = tmp_path / "odd.jpg"
    img.save(path, quality=95)
    reference = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.LANCZOS), dtype=int)
    assert np.abs(load_image(path, 224).astype(int) - reference).mean() < 1.0


def test_limits_are_sane():
    assert MAX_FILE_BYTES == 100_000_000
    # Every accepted PNG (at most 4 bytes a pixel once decoded) fits the decode budget at size 224.
    assert MAX_PIXELS * 4 < MAX_DECODE_BYTES < 2**30


def test_result_is_a_writable_contiguous_array(tmp_path):
    path = tmp_path / "a.png"
    two_halves().save(path)
    out = load_image(path, 16)
    assert out.flags.writeable and out.flags.c_contiguous


# --- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: file not found"
    assert info.value.path == str(path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: not a JPEG, PNG, BMP or WebP image"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(path)


def test_unsupported_format_is_refused(tmp_path):
    path = tmp_path / "anim.gif"
    two_halves().save(path)
    with pytest.raises(ImageError, match="not a JPEG, PNG, BMP or WebP image"):
        load_image(path)


@pytest.mark.parametrize("size", [None, 32])
def test_truncated_jpeg(tmp_path, size):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(data, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError) as info:
        load_image(path, size)
    assert str(info.value).startswith(f"{path}: truncated image file")
    assert "\n" not in str(info.value)


def test_truncated_png(tmp_path):
    data = png_bytes(Image.fromarray(np.random.default_rng(3).integers(0, 256, (100, 100, 3), dtype=np.uint8)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated|corrupt"):
        load_image(path)


def test_decompression_bomb_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_size(100_000, 100_000))
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}: image too large (10000000000 pixels")


def test_image_over_our_limit_but_under_pillows_error(tmp_path, recwarn):
    # 121 M pixels: Pillow only warns here; our own limit refuses, quietly.
    side = 11_000
    assert MAX_PIXELS < side * side < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=f"image too large \\({side * side} pixels"):
        load_image(png_with_size(side, side), name="upload.png")
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_bytes_errors_use_the_given_name():
    with pytest.raises(ImageError) as info:
        load_image(b"GIF89a nonsense", name="upload.jpg")
    assert str(info.value).startswith("upload.jpg: ")
    with pytest.raises(ImageError, match=r"^<bytes>: empty file$"):
        load_image(b"")


def test_bad_size_argument(tmp_path):
    path = tmp_path / "a.png"
    two_halves().save(path)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            load_image(path, bad)


def test_image_error_pickles():
    error = pickle.loads(pickle.dumps(ImageError("/x/y.jpg", "file not found")))
    assert str(error) == "/x/y.jpg: file not found" and error.problem == "file not found"


# --- list_images -------------------------------------------------------------------------------


def test_list_images_filters_and_sorts(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.jpeg", "d.webp", "e.bmp", "notes.txt", "f.gif", "._a.jpg", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.jpg").write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a directory with an image-like name is not an image
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["a.PNG", "b.jpg", "c.jpeg", "d.webp", "e.bmp"]
    assert all(p.parent == tmp_path for p in list_images(tmp_path))


def test_list_images_recursive(tmp_path):
    for name in ("b.jpg", "a/z.png", "a/b/c.jpg", ".git/x.jpg", "a/._y.jpg", "c.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)]
    assert found == ["a/b/c.jpg", "a/z.png", "b.jpg"]


def test_list_images_missing_directory(tmp_path):
    with pytest.raises(ImageError, match="directory not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ImageError, match="not a directory"):
        list_images(tmp_path / "file.jpg")


def test_extensions():
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# --- scan_images -------------------------------------------------------------------------------


def test_scan_images_reports_what_it_cannot_use(tmp_path, caplog):
    (tmp_path / "good.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink(tmp_path / "loop1.jpg", tmp_path / "loop2.jpg")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    os.symlink(tmp_path / "good.jpg", tmp_path / "alias.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken_no_extension")  # not an image name: ignored
    for folder in ("sub", "other", ".hidden"):
        (tmp_path / folder).mkdir()
    with caplog.at_level(logging.INFO, logger="captioner.images"):
        listing = scan_images(tmp_path)
    assert isinstance(listing, ImageListing)
    assert [p.name for p in listing.paths] == ["alias.jpg", "good.jpg"]
    assert listing.skipped == [
        (tmp_path / "broken.png", "broken symbolic link (its target does not exist)"),
        (tmp_path / "loop1.jpg", "symbolic link loop (too many levels of symbolic links)"),
        (tmp_path / "loop2.jpg", "symbolic link loop (too many levels of symbolic links)"),
        (tmp_path / "pipe.jpg", "not a regular file (fifo)"),
    ]
    assert listing.subfolders == 2  # sub and other; hidden folders are never searched
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{tmp_path / 'pipe.jpg'}: skipped: not a regular file (fifo)" in warnings and len(warnings) == 4
    assert any("2 subfolder(s) not searched" in r.getMessage() for r in caplog.records)
    # The old behaviour: one loop aborted the whole listing. The wrapper now returns the usable files.
    assert list_images(tmp_path) == listing.paths


def test_scan_images_recursive_does_not_follow_folder_links_into_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.png").write_bytes(b"x")
    (tmp_path / "top.jpg").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "a" / "b" / "up")  # back to the root: a loop
    os.symlink(tmp_path / "a", tmp_path / "same_as_a")  # a second name for a folder: listed once
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.jpg").write_bytes(b"x")
    os.symlink(elsewhere, tmp_path / "linked")  # a link to another folder is followed
    listing = scan_images(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in listing.paths] == ["a/b/deep.png", "linked/linked.jpg", "top.jpg"]
    assert listing.skipped == [(tmp_path / "a" / "b" / "up", "symbolic link loop (links back to a folder above it)")]
    assert listing.subfolders == 0


def test_scan_images_an_unreadable_subfolder_is_skipped_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.jpg").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = scan_images(tmp_path, recursive=True)
    assert [p.name for p in listing.paths] == ["a.jpg"]
    assert listing.skipped == [(tmp_path / "locked", "cannot search folder: permission denied")]


def test_scan_images_missing_directory_still_raises(tmp_path):
    with pytest.raises(ImageError, match="directory not found"):
        scan_images(tmp_path / "missing")


def test_library_logs_instead_of_printing():
    import ast
    import importlib
    import pkgutil

    import captioner.images as images

    modules = [images] + [importlib.import_module(f"captioner.images.{m.name}") for m in pkgutil.iter_modules(images.__path__)]
    assert len(modules) > 1
    for module in modules:
        tree = ast.parse(open(module.__file__).read())
        calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert "print" not in calls, module.__name__
        if hasattr(module, "logger"):
            assert module.logger.name == "captioner.images", module.__name__
    assert images.logger.name == "captioner.images"
