"""A full disk under the models folder: real files on a genuinely small filesystem (a tmpfs
mounted for the test), no mocks. A run that cannot fit is refused before it trains; one whose
disk fills up keeps the best epoch it saved; one that can save nothing fails with one sentence.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ml.errors import DiskFullError, LabError
from ml.train import train

FAST = {"image_size": 32, "batch_size": 8, "augment": False, "precision": "float32",
        "early_stopping_patience": 10}
# What a library's own error text carries and a run's error must not: h5py's message names
# the errno, the file descriptor and the buffer's address.
RAW = re.compile(r"h5py|errno|file descriptor|buf =|0x[0-9a-f]{4,}", re.IGNORECASE)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kilobytes)``: a folder on a tmpfs of that size, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(kilobytes: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill up needs root")
        if shutil.which("mount") is None:
            pytest.skip("no mount command to make a small filesystem with")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip("this machine does not allow mounting a tmpfs (a container without "
                        f"CAP_SYS_ADMIN?): {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    gc.collect()  # files a failed write left open
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Write a ballast file until only ``leave`` bytes are free on the disk."""
    chunk = b"\0" * (1 << 20)
    with open(disk / "ballast", "ab", buffering=0) as ballast:
        while (free := shutil.disk_usage(disk).free) > leave:
            try:
                ballast.write(chunk[:free - leave])
            except OSError:
                break  # full
    assert shutil.disk_usage(disk).free <= leave + 4096


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files anywhere under folder."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def assert_plain(text: str | None) -> None:
    assert text and not RAW.search(text), text


def test_a_disk_too_small_for_one_checkpoint_refuses_the_run_before_it_trains(
        tiny_dataset, small_disk):
    disk = small_disk(8000)  # 8.2 MB; fast_cnn's checkpoint alone takes 13.7 MB
    out = disk / "models" / "r1"
    events: list[dict] = []
    with pytest.raises(DiskFullError) as caught:
        train({**FAST, "epochs": 2}, tiny_dataset, out, on_event=events.append, run_id="r1")
    message = str(caught.value)
    found = re.fullmatch(r"this run needs about (\d+) MB in (.+) and only ([\d.]+) MB are free; "
                         r"free some space there \(or train a smaller model\) and start the run "
                         r"again", message)
    assert found, message
    needed, folder, free = int(found[1]), found[2], float(found[3])
    # two float32 copies of 1.14 M weights with Adam's two moments each, and the cards
    assert 27 <= needed <= 31 and folder == str(out)
    assert free == pytest.approx(shutil.disk_usage(disk).free / 1e6, abs=0.06)
    assert isinstance(caught.value, LabError)  # the worker reports it as the run's error
    assert [e["type"] for e in events] == ["run_finished"]  # not one batch trained
    assert events[0]["status"] == "failed" and events[0]["error"] == message
    assert list(disk.iterdir()) == []  # nothing written, not even the run's folder


# A fresh model has no optimizer state to load the checkpoint's into: Keras says so.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_a_disk_that_fills_after_the_first_checkpoint_keeps_the_first_epoch(
        tiny_dataset, small_disk, tmp_path, caplog):
    from ml.model_io import load_model
    from ml.recipes import build_model

    disk = small_disk(40_000)  # 41 MB: room for the run, which needs about 29 MB
    out = disk / "models" / "r1"
    epoch_1 = tmp_path / "epoch1.weights.h5"
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["type"] == "checkpoint" and event["epoch"] == 1:
            shutil.copyfile(out / "best.weights.h5", epoch_1)  # what epoch 1 saved
            # Someone else's files fill the disk: 5 MB stay, less than a checkpoint takes.
            fill(disk, leave=5_000_000)

    caplog.set_level(logging.WARNING)
    # On this data every epoch's validation loss falls well below the last one's, so epoch 2
    # is a better epoch, and its checkpoint finds the disk full.
    summary = train({**FAST, "epochs": 4}, tiny_dataset, out, on_event=on_event, run_id="r1")

    finished = events[-1]
    assert finished["type"] == "run_finished" and finished["status"] == "succeeded"
    assert summary["status"] == "succeeded"
    assert [e["epoch"] for e in events if e["type"] == "checkpoint"] == [1]
    assert finished["best_epoch"] == summary["metrics"]["best_epoch"] == 1
    [note] = summary["notes"]
    # The next better epoch (usually 2; on CPU noise sometimes 3) found the disk full, and
    # the run stopped right there.
    failed = int(re.match(r"epoch (\d+)'s checkpoint could not be saved because the disk is "
                          r"full", note).group(1))
    assert failed >= 2
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == list(range(1, failed + 1))
    assert "kept epoch 1" in note and finished["error"] == note
    assert_plain(note)
    for record in caplog.records:
        if record.name.startswith("ml"):
            assert_plain(record.getMessage())

    assert leftovers(disk) == []  # no partial checkpoint, model or card
    # The model kept is epoch 1's, whole: it loads, predicts, and holds epoch 1's weights.
    import numpy as np

    loaded = load_model(out)
    assert loaded.card["metrics"]["best_epoch"] == 1 and loaded.card["notes"] == [note]
    prediction = loaded.model(np.zeros((2, 32, 32, 3), "uint8"))
    assert prediction.shape == (2, 1)
    expected = build_model("fast_cnn", 32, augment=False)
    expected.load_weights(epoch_1)
    for kept, saved in zip(loaded.model.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, saved)


def test_a_run_that_can_save_nothing_fails_with_one_sentence(tiny_dataset, small_disk):
    disk = small_disk(40_000)
    out = disk / "models" / "r1"
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["type"] == "run_started":  # past the free-space check: then the disk fills
            fill(disk)

    with pytest.raises(DiskFullError) as caught:
        train({**FAST, "epochs": 3}, tiny_dataset, out, on_event=on_event, run_id="r1")
    message = str(caught.value)
    assert message == (f"the models folder is full: 0 bytes free on {out}; free some space "
                       f"and start the run again")
    assert isinstance(caught.value, LabError)
    finished = events[-1]
    assert finished["type"] == "run_finished" and finished["status"] == "failed"
    assert finished["error"] == message
    assert_plain(finished["error"])
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1]  # stopped at once
    assert not [e for e in events if e["type"] == "checkpoint"]
    assert list(out.iterdir()) == []  # the partial checkpoint and best.json are gone
