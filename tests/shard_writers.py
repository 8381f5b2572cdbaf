"""Writing small img2dataset-style shards for tests: WebDataset tars and Parquet files.

img2dataset names samples by a 9-digit key (shard number and row) and writes, per sample,
KEY.jpg, KEY.txt and KEY.json into NNNNN.tar; its Parquet output has key, caption, url, status and
the image bytes in a `jpg` column (null where a download failed).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from conftest import captions_for, image_colors


def jpeg_bytes(index: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A small colour-coded JPEG (foreground square on a background), as conftest's images."""
    fg, bg = image_colors(index)
    from conftest import COLORS

    img = Image.new("RGB", size, COLORS[bg])
    w, h = size
    img.paste(COLORS[fg], (w // 4, h // 4, w - w // 4, h - h // 4))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def caption_of(index: int) -> str:
    return captions_for(*image_colors(index))[index % 5]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, n_images: int, per_shard: int = 4, with_json: bool = True, extra: dict | None = None) -> list[str]:
    """Writes ceil(n / per_shard) shards 00000.tar, ...; returns the sample keys ("000000000.jpg", ...).

    `extra`: key index -> dict of overrides for that sample: {"caption": None} leaves out the .txt,
    {"image": None} the .jpg, {"split": "val"} adds a split to the .json.
    """
    root.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    keys = []
    for shard in range((n_images + per_shard - 1) // per_shard):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for index in range(shard * per_shard, min(n_images, (shard + 1) * per_shard)):
                key = f"{shard:05d}{index % per_shard:04d}"
                over = extra.get(index, {})
                image = over.get("image", jpeg_bytes(index))
                caption = over.get("caption", caption_of(index))
                if image is not None:
                    _add(tar, f"{key}.jpg", image)
                if caption is not None:
                    _add(tar, f"{key}.txt", caption.encode())
                if with_json:
                    meta = {"url": f"http://example.com/{index}.jpg", "key": key, "status": "success", "caption": caption}
                    if "split" in over:
                        meta["split"] = over["split"]
                    _add(tar, f"{key}.json", json.dumps(meta).encode())
                keys.append(f"{key}.jpg")
        # img2dataset also writes these next to the tars; readers must leave them alone.
        (root / f"{shard:05d}_stats.json").write_text("{}")
    return keys


def write_parquet(root: Path, n_images: int, per_shard: int = 4, extra: dict | None = None, image_column: str = "jpg", row_group_size: int = 3) -> list[str]:
    """Writes img2dataset-style Parquet shards 00000.parquet, ...; returns the sample keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    keys = []
    for shard in range((n_images + per_shard - 1) // per_shard):
        rows: dict[str, list] = {"key": [], "url": [], "caption": [], "status": [], image_column: []}
        splits = []
        for index in range(shard * per_shard, min(n_images, (shard + 1) * per_shard)):
            key = f"{shard:05d}{index % per_shard:04d}"
            over = extra.get(index, {})
            image = over.get("image", jpeg_bytes(index))
            rows["key"].append(key)
            rows["url"].append(f"http://example.com/{index}.jpg")
            rows["caption"].append(over.get("caption", caption_of(index)))
            rows["status"].append("success" if image is not None else "failed_to_download")
            rows[image_column].append(image)
            splits.append(over.get("split"))
            keys.append(f"{key}.jpg")
        columns = {name: pa.array(values, pa.binary() if name == image_column else pa.string()) for name, values in rows.items()}
        if any(s is not None for s in splits):
            columns["split"] = pa.array(splits, pa.string())
        pq.write_table(pa.table(columns), root / f"{shard:05d}.parquet", row_group_size=row_group_size)
    return keys
