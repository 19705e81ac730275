"""Checks on the real Kaggle photos in ../shared; skipped cleanly when they are absent."""

from __future__ import annotations

import pytest

from ml.data import scan
from ml.evaluate import evaluate
from ml.model_io import load_model
from ml.predict import explain_bytes
from ml.train import train
from testkit.paths import SHARED_TRAIN

pytestmark = pytest.mark.skipif(not SHARED_TRAIN.is_dir(),
                                reason=f"real photos not found at {SHARED_TRAIN}")


def test_scan_real_folder():
    summary = scan(SHARED_TRAIN).summary()
    assert summary["total"] == summary["cats"] + summary["dogs"] >= 1000
    assert abs(summary["cats"] - summary["dogs"]) <= summary["total"] * 0.1


def test_one_epoch_on_real_photos(tmp_path):
    summary = train({"limit": 160, "epochs": 1, "image_size": 64, "batch_size": 16},
                    SHARED_TRAIN, tmp_path)
    assert summary["counts"]["train"] + summary["counts"]["val"] == 160
    loaded = load_model(tmp_path)
    photo = next(SHARED_TRAIN.glob("cat.*.jpg")).read_bytes()
    result = explain_bytes(loaded, photo)
    assert result["heatmap"].shape[0] > 1 and result["label"] in ("cat", "dog")
    # 200 x 200 photo: the overlay keeps its size
    assert result["overlay_png"][:8] == b"\x89PNG\r\n\x1a\n"
    # evaluate reads real JPEGs through the same pipeline
    subset = tmp_path / "subset"
    subset.mkdir()
    for kind in ("cat", "dog"):
        for path in sorted(SHARED_TRAIN.glob(f"{kind}.*.jpg"))[:10]:
            (subset / path.name).symlink_to(path)
    report = evaluate(loaded, subset)
    assert report["n"] == 20 and sum(map(sum, report["confusion"])) == 20
    assert [sum(row) for row in report["confusion"]] == [10, 10]  # 10 true dogs, 10 true cats
