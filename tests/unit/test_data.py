"""Scanning dataset folders into DataFrames, and splitting them."""

from __future__ import annotations

import json

import pytest

from ml.data import label_for, scan, split_frame, stratified_sample
from ml.errors import DatasetError
from testkit.cli import run_cli
from testkit.synthetic import make_flat_dataset, photo_bytes


def test_flat_layout_labels_dog_0_cat_1(tmp_path):
    make_flat_dataset(tmp_path, per_class=3)
    result = scan(tmp_path)
    df = result.images
    assert list(df.columns[:3]) == ["image_path", "label", "class_name"]
    assert len(df) == 6 and result.skipped.empty
    for row in df.itertuples():
        name = row.image_path.rsplit("/", 1)[1]
        assert row.class_name == name.split(".")[0]
        assert row.label == (1 if name.startswith("cat") else 0)


def test_class_folders_any_case_and_nested(tmp_path):
    for folder, kind in (("PetImages/Cat", "cat"), ("PetImages/DOG", "dog"),
                         ("extra/cats/indoor", "cat"), ("extra/Dogs", "dog")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "1.jpg").write_bytes(photo_bytes(kind))
    df = scan(tmp_path).images.sort_values("image_path")
    got = {p.split(str(tmp_path))[1]: c for p, c in zip(df.image_path, df.class_name, strict=True)}
    assert got == {"/PetImages/Cat/1.jpg": "cat", "/PetImages/DOG/1.jpg": "dog",
                   "/extra/Dogs/1.jpg": "dog", "/extra/cats/indoor/1.jpg": "cat"}


def test_bad_files_are_reported_with_reasons_never_raised(tmp_path):
    good = photo_bytes("cat")
    (tmp_path / "Cat").mkdir()
    (tmp_path / "Dog").mkdir()
    (tmp_path / "Cat" / "ok.jpg").write_bytes(good)
    (tmp_path / "Cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Cat" / "text.jpg").write_bytes(b"this is not a photo at all")
    (tmp_path / "Cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 200)
    (tmp_path / "Dog" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "Dog" / "bitmap.jpg").write_bytes(photo_bytes("dog", fmt="BMP"))  # BMP named .jpg
    (tmp_path / "Dog" / "photo.tiff").write_bytes(photo_bytes("dog", fmt="TIFF"))
    (tmp_path / "horse.1.jpg").write_bytes(photo_bytes("dog"))
    result = scan(tmp_path)
    reasons = {p.rsplit("/", 1)[1]: r for p, r in zip(result.skipped.image_path,
                                                       result.skipped.reason, strict=True)}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["Thumbs.db"].startswith("not an image")
    assert reasons["truncated.jpg"].startswith("corrupt: truncated JPEG")
    assert reasons["photo.tiff"].startswith("unsupported format: TIFF")
    assert reasons["horse.1.jpg"].startswith("unknown label")
    names = result.images.image_path.str.rsplit("/", n=1).str[1]
    kept = dict(zip(names, result.images.format, strict=True))
    assert kept == {"ok.jpg": "JPEG", "bitmap.jpg": "BMP"}  # the bytes decide, not the name
    summary = result.summary()
    assert (summary["total"], summary["cats"], summary["dogs"], summary["skipped"]) == (2, 1, 1, 6)


def test_missing_and_non_folder_paths_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan(tmp_path / "file.txt")


def test_label_from_name_beats_folder(tmp_path):
    assert label_for(tmp_path / "Dog" / "cat.3.jpg", tmp_path) == "cat"
    assert label_for(tmp_path / "x" / "Cats" / "IMG_1.jpg", tmp_path) == "cat"
    assert label_for(tmp_path / "catalogue.jpg", tmp_path) is None  # no separator after 'cat'


def test_split_is_stratified_disjoint_and_repeatable(tmp_path):
    make_flat_dataset(tmp_path, per_class=20, size=16)
    df = scan(tmp_path).images
    train_a, val_a = split_frame(df, 0.25, seed=7)
    train_b, val_b = split_frame(df, 0.25, seed=7)
    _, val_c = split_frame(df, 0.25, seed=8)
    assert list(val_a.image_path) == list(val_b.image_path)
    assert set(val_a.image_path) != set(val_c.image_path)
    assert not set(train_a.image_path) & set(val_a.image_path)
    assert len(train_a) + len(val_a) == 40
    assert val_a.label.value_counts().to_dict() == {0: 5, 1: 5}


def test_stratified_sample_keeps_balance(tmp_path):
    make_flat_dataset(tmp_path, per_class=20, size=16)
    sample = stratified_sample(scan(tmp_path).images, 10, seed=1)
    assert sample.label.value_counts().to_dict() == {0: 5, 1: 5}


def test_scan_handles_25000_files(tmp_path):
    """25,000 files (hard links of two photos) are all found; bench/scan_speed.py times it."""
    cat, dog = tmp_path / "c.jpg", tmp_path / "d.jpg"
    cat.write_bytes(photo_bytes("cat", size=16))
    dog.write_bytes(photo_bytes("dog", size=16))
    data = tmp_path / "data"
    data.mkdir()
    for i in range(12_500):
        (data / f"cat.{i}.jpg").hardlink_to(cat)
        (data / f"dog.{i}.jpg").hardlink_to(dog)
    summary = scan(data).summary()
    assert (summary["total"], summary["cats"], summary["dogs"]) == (25_000, 12_500, 12_500)


def test_cli_scan_json(tmp_path):
    make_flat_dataset(tmp_path, per_class=2, size=16)
    (tmp_path / "dog.99.jpg").write_bytes(b"")
    proc = run_cli("scan", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["total"], data["cats"], data["dogs"], data["skipped"]) == (4, 2, 2, 1)
    assert data["skipped_reasons"] == {"empty file (0 bytes)": 1}


def test_a_rescan_reads_only_changed_files_and_sees_every_change(tmp_path, monkeypatch):
    import os

    import ml.data

    make_flat_dataset(tmp_path, per_class=4)
    first = scan(tmp_path)
    assert len(first.images) == 8
    opened: list[str] = []
    real_sniff = ml.data.sniff
    monkeypatch.setattr(ml.data, "sniff", lambda path: (opened.append(path.name),
                                                        real_sniff(path))[1])
    assert scan(tmp_path).images.equals(first.images)
    assert opened == []  # nothing changed: nothing read again

    cats = sorted(tmp_path.glob("cat.*"))
    replaced, truncated, removed = cats[0], cats[1], cats[2]
    size = replaced.stat().st_size
    os.remove(replaced)  # replaced by a file of the same size that is not an image
    replaced.write_bytes(b"\0" * size)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    removed.unlink()
    (tmp_path / "dog.new.jpg").write_bytes(photo_bytes("dog"))
    again = scan(tmp_path)
    assert sorted(opened) == sorted([replaced.name, truncated.name, "dog.new.jpg"])
    reasons = dict(zip(again.skipped.image_path, again.skipped.reason, strict=True))
    assert reasons[str(replaced)].startswith("not an image")
    assert reasons[str(truncated)].startswith("corrupt: truncated JPEG")
    assert str(removed) not in set(again.images.image_path) | set(reasons)
    assert str(tmp_path / "dog.new.jpg") in set(again.images.image_path)
    assert len(again.images) == 8 - 3 + 1
