"""Made-up 'photos' for tests, benchmarks and offline demos: no real photo is ever committed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_photo(kind: str, size: int = 40, seed: int = 0) -> Image.Image:
    """A picture a tiny CNN can learn: cats warm with a bright blob, dogs cool with a dark one."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 40] if kind == "cat" else [40, 90, 200], dtype=np.float64)
    img = base + rng.normal(0, 30, (size, size, 3))
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size // 6) ** 2
    img[blob] = [255, 255, 255] if kind == "cat" else [0, 0, 0]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def photo_bytes(kind: str = "cat", fmt: str = "JPEG", size: int = 40, seed: int = 0,
                mode: str | None = None, **save_kw) -> bytes:
    """One synthetic photo encoded as ``fmt`` (optionally converted to ``mode`` first)."""
    image = synthetic_photo(kind, size, seed)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def make_flat_dataset(folder: Path, per_class: int, size: int = 40) -> Path:
    """The Kaggle layout: ``cat.N.jpg`` / ``dog.N.jpg`` in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("cat", "dog"):
        for i in range(per_class):
            seed = i if kind == "cat" else 10_000 + i
            (folder / f"{kind}.{i}.jpg").write_bytes(photo_bytes(kind, size=size, seed=seed))
    return folder
