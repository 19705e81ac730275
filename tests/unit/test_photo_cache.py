"""The shared cache of decoded photos: built once, reused, rebuilt when the dataset changes,
never read half-built, and the pipeline gives the same photos from it as without it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ml.data import scan
from ml.photo_cache import IMAGES, MANIFEST, cache_folder, open_photo_cache
from ml.pipeline import decode_many
from testkit.paths import ROOT
from testkit.synthetic import make_flat_dataset, photo_bytes

SIZE = 24
CACHE_LOG = "ml.photo_cache"


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_flat_dataset(tmp_path / "train", per_class=6)


def _open(data: Path, cache_dir: Path, size: int = SIZE):
    result = scan(data)
    return result, open_photo_cache(result.images, result.root, size, cache_dir,
                                    decode=decode_many)


def _decoded(path: Path, size: int = SIZE) -> np.ndarray:
    import tensorflow as tf

    from ml.pipeline import decode_and_resize

    return decode_and_resize(tf.io.read_file(str(path)), size).numpy()


def test_built_once_then_reused_with_the_pipelines_pixels(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    result, built = _open(dataset, cache_dir)
    assert built.state == "built" and built.images.shape == (12, SIZE, SIZE, 3)
    images_file = built.directory / IMAGES
    written = images_file.stat().st_mtime_ns

    _, again = _open(dataset, cache_dir)
    assert again.state == "reused"
    assert images_file.stat().st_mtime_ns == written  # not written again
    photo = dataset / "cat.3.jpg"
    row = again.rows["cat.3.jpg"]
    assert np.array_equal(np.asarray(again.images[row]), _decoded(photo))
    # Another size is another cache.
    _, other = _open(dataset, cache_dir, size=16)
    assert other.state == "built" and other.directory != built.directory


def test_an_added_removed_or_replaced_photo_means_a_rebuild(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    _, first = _open(dataset, cache_dir)
    old_pixels = np.array(first.images[first.rows["dog.2.jpg"]])

    (dataset / "cat.99.jpg").write_bytes(photo_bytes("cat", seed=99))
    _, added = _open(dataset, cache_dir)
    assert added.state == "built" and len(added.rows) == 13 and "cat.99.jpg" in added.rows

    (dataset / "cat.99.jpg").unlink()
    _, removed = _open(dataset, cache_dir)
    assert removed.state == "built" and "cat.99.jpg" not in removed.rows

    replaced = dataset / "dog.2.jpg"
    replaced.write_bytes(photo_bytes("cat", seed=1234))
    os.utime(replaced, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later mtime for sure
    _, after = _open(dataset, cache_dir)
    assert after.state == "built"
    new_pixels = np.asarray(after.images[after.rows["dog.2.jpg"]])
    assert np.array_equal(new_pixels, _decoded(replaced))
    assert not np.array_equal(new_pixels, old_pixels)
    # The first cache mapped before the rebuilds still reads (its file was unlinked).
    assert np.array_equal(np.asarray(first.images[first.rows["dog.2.jpg"]]), old_pixels)
    # Nothing left over beside the one cache of this size (and its lock file).
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [after.directory.name, after.directory.name + ".lock"])


# A builder that decodes slowly (a stand-in for 25,000 JPEGs), in a process of its own.
SLOW_BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from ml.data import scan
    from ml.photo_cache import open_photo_cache

    def slow(paths, size):
        for i, _ in enumerate(paths):
            time.sleep(0.3)
            yield i, np.full((size, size, 3), 7, dtype=np.uint8)

    result = scan(sys.argv[1])
    cache = open_photo_cache(result.images, result.root, int(sys.argv[3]), Path(sys.argv[2]),
                             decode=slow)
    print("done", cache.state, flush=True)
""")


def _slow_builder(data: Path, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SLOW_BUILDER, str(data), str(cache_dir),
                             str(SIZE)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _wait_building(cache_dir: Path, proc: subprocess.Popen) -> Path:
    deadline = time.monotonic() + 60
    while True:
        found = [p for p in cache_dir.glob("*.building-*") if (p / IMAGES).exists()]
        if found:
            return found[0]
        assert proc.poll() is None and time.monotonic() < deadline, "no build started"
        time.sleep(0.05)


def test_a_build_killed_half_way_is_never_used_and_the_next_run_builds_anew(dataset,
                                                                            tmp_path):
    cache_dir = tmp_path / "cache"
    builder = _slow_builder(dataset, cache_dir)
    building = _wait_building(cache_dir, builder)
    time.sleep(0.8)  # a few photos in
    builder.send_signal(signal.SIGKILL)
    builder.wait(timeout=10)
    assert building.exists()  # what it left: a folder that is not the cache
    result = scan(dataset)
    folder = cache_folder(cache_dir, result.root, SIZE)
    assert not (folder / MANIFEST).exists()

    # No lock left held, and what the killed builder wrote is not read.
    cache = open_photo_cache(result.images, result.root, SIZE, cache_dir, decode=decode_many)
    assert cache.state == "built"
    assert not building.exists()  # cleared by the build after it
    row = cache.rows["cat.0.jpg"]
    assert np.array_equal(np.asarray(cache.images[row]), _decoded(dataset / "cat.0.jpg"))
    assert not (np.asarray(cache.images) == 7).all(axis=(1, 2, 3)).any()


def test_a_run_asking_while_another_builds_waits_and_reuses_that_build(dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    builder = _slow_builder(dataset, cache_dir)
    _wait_building(cache_dir, builder)
    _, cache = _open(dataset, cache_dir)  # blocks on the builder's lock
    assert builder.wait(timeout=60) == 0
    assert builder.stdout.read().strip() == "done built"
    assert cache.state == "reused"  # decoded once, by the builder
    assert (np.asarray(cache.images) == 7).all()  # the builder's photos, not its own


def test_a_photo_that_passes_the_scan_but_does_not_decode_is_left_out(dataset, tmp_path):
    broken = dataset / "cat.50.jpg"
    good = photo_bytes("cat", seed=50)
    broken.write_bytes(good[:200] + b"\x00" * 2000 + good[-200:])  # head and tail look fine
    result, cache = _open(dataset, tmp_path / "cache")
    assert str(broken) in set(result.images["image_path"])  # the scan let it through
    rows, labels = cache.select(result.images)
    assert len(rows) == len(result.images) - 1 and len(labels) == len(rows)
    assert not cache.decoded[cache.rows["cat.50.jpg"]]


def test_the_pipeline_gives_the_same_batches_from_the_cache(dataset, tmp_path):
    from ml.pipeline import make_dataset

    result, cache = _open(dataset, tmp_path / "cache")
    df = result.images.sample(frac=1, random_state=3).reset_index(drop=True)
    plain = list(make_dataset(df, SIZE, 5, shuffle=False).as_numpy_iterator())
    cached = list(make_dataset(df, SIZE, 5, shuffle=False, photos=cache).as_numpy_iterator())
    assert [len(b[0]) for b in cached] == [5, 5, 2]
    for (x1, y1), (x2, y2) in zip(plain, cached, strict=True):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # Shuffled: every photo once an epoch.
    shuffled = make_dataset(df, SIZE, 4, shuffle=True, seed=1, photos=cache)
    epochs = [np.concatenate([y for _, y in shuffled.as_numpy_iterator()]) for _ in range(2)]
    assert sorted(epochs[1]) == sorted(epochs[0])
    assert sorted(epochs[0]) == sorted(df["label"].astype("float32"))



def _cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == CACHE_LOG and r.levelno >= logging.WARNING]


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_manifest_naming_an_undecodable_row_outside_the_cache_is_rebuilt(dataset, tmp_path,
                                                                           caplog):
    """Issue 33: the run failed with numpy's "index 1000000000 is out of bounds", every time."""
    from ml.train import train

    cache_dir = tmp_path / "cache"
    _, first = _open(dataset, cache_dir, size=32)
    _edit_manifest(first.directory, lambda m: m.update(undecodable=[1_000_000_000]))
    del first
    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    events: list[dict] = []
    summary = train({"image_size": 32, "batch_size": 8, "augment": False, "epochs": 1},
                    dataset, tmp_path / "run", on_event=events.append, run_id="r1",
                    photo_cache_dir=cache_dir)
    assert summary["status"] == "succeeded"
    assert events[0]["photo_cache"]["state"] == "built"
    [warning] = _cache_warnings(caplog)
    assert str(cache_folder(cache_dir, dataset, 32)) in warning and "undecodable" in warning


def _truncate_images(folder: Path) -> None:
    with open(folder / IMAGES, "r+b") as fh:
        fh.truncate((folder / IMAGES).stat().st_size - 1)


# What a cache folder can come to hold (edited by hand, a disk gone wrong, another version).
POISONINGS = {
    "undecodable negative": lambda f: _edit_manifest(f, lambda m: m.update(undecodable=[-1])),
    "undecodable not whole": lambda f: _edit_manifest(f, lambda m: m.update(undecodable=[1.5])),
    "undecodable a string": lambda f: _edit_manifest(f, lambda m: m.update(undecodable=["2"])),
    "undecodable a bool": lambda f: _edit_manifest(f, lambda m: m.update(undecodable=[True])),
    "undecodable not a list": lambda f: _edit_manifest(f, lambda m: m.update(undecodable=3)),
    "paths longer than the array": lambda f: _edit_manifest(
        f, lambda m: m["paths"].append("cat.999.jpg")),
    "paths not the dataset's": lambda f: _edit_manifest(
        f, lambda m: m["paths"].__setitem__(0, "cat.999.jpg")),
    "pixel file truncated": _truncate_images,
    "pixel file missing": lambda f: (f / IMAGES).unlink(),
    "manifest not JSON": lambda f: (f / MANIFEST).write_text('{"format": 1, "paths": ['),
    "manifest a JSON list": lambda f: (f / MANIFEST).write_text("[1, 2, 3]"),
    "image_size a string": lambda f: _edit_manifest(f, lambda m: m.update(image_size=str(SIZE))),
    "image_size a float": lambda f: _edit_manifest(f, lambda m: m.update(image_size=SIZE + 0.0)),
    "format a bool": lambda f: _edit_manifest(f, lambda m: m.update(format=True)),
}


@pytest.mark.parametrize("poison", POISONINGS.values(), ids=POISONINGS.keys())
def test_a_cache_whose_manifest_and_files_disagree_is_rebuilt_once(dataset, tmp_path, caplog,
                                                                    poison):
    cache_dir = tmp_path / "cache"
    _, first = _open(dataset, cache_dir)
    pixels, rows = np.array(first.images), dict(first.rows)
    folder = first.directory
    del first  # its mapping goes before the file is cut short
    poison(folder)

    caplog.set_level(logging.INFO, logger=CACHE_LOG)
    _, rebuilt = _open(dataset, cache_dir)
    assert rebuilt.state == "built"
    [warning] = _cache_warnings(caplog)
    assert str(folder) in warning
    assert rebuilt.rows == rows and rebuilt.decoded.all()
    assert np.array_equal(np.asarray(rebuilt.images), pixels)

    caplog.clear()
    result, again = _open(dataset, cache_dir)
    assert again.state == "reused" and _cache_warnings(caplog) == []
    picked, labels = again.select(result.images)
    assert len(picked) == len(labels) == 12
    assert np.array_equal(np.asarray(again.images), pixels)
