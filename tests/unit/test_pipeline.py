"""The tf.data pipeline decodes every trainable format and survives files that lie."""

from __future__ import annotations

import numpy as np

from ml.data import scan
from ml.pipeline import make_dataset
from testkit.synthetic import photo_bytes


def test_mixed_formats_decode_to_uint8_squares(tmp_path):
    files = {
        "cat.1.jpg": photo_bytes("cat"),
        "cat.2.png": photo_bytes("cat", "PNG", mode="RGBA"),
        "cat.3.jpg": photo_bytes("cat", mode="CMYK"),
        "dog.1.jpg": photo_bytes("dog", mode="L"),
        "dog.2.bmp": photo_bytes("dog", "BMP"),
        "dog.3.gif": photo_bytes("dog", "GIF"),
        "dog.4.jpg": photo_bytes("dog", size=90),  # a different size is resized too
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    df = scan(tmp_path).images
    assert len(df) == len(files)
    images, labels = [], []
    for x, y in make_dataset(df, 24, batch_size=4, shuffle=False):
        images.append(x.numpy())
        labels.append(y.numpy())
    x, y = np.concatenate(images), np.concatenate(labels)
    assert x.shape == (7, 24, 24, 3) and x.dtype == np.uint8
    assert list(y) == list(df.label.astype("float32"))
    # the warm 'cat' JPEG stays warm: red channel above blue after decode and resize
    first = x[list(df.image_path.str.endswith("cat.1.jpg")).index(True)]
    assert first[..., 0].mean() > first[..., 2].mean() + 50


def test_a_file_that_passes_the_scan_but_not_the_decoder_is_dropped(tmp_path):
    (tmp_path / "cat.1.jpg").write_bytes(photo_bytes("cat"))
    (tmp_path / "dog.1.jpg").write_bytes(photo_bytes("dog"))
    # JPEG start and end markers around garbage: the scan's header check lets it through
    (tmp_path / "dog.2.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x13" * 500 + b"\xff\xd9")
    df = scan(tmp_path).images
    assert len(df) == 3
    batches = list(make_dataset(df, 16, batch_size=8, shuffle=False))
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(labels.tolist()) == [0.0, 1.0]  # the liar is dropped, the rest kept
