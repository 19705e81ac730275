"""The CLI as scripts use it: stable forms, one clear sentence per error, no tracebacks."""

from __future__ import annotations

import json

import pytest

from testkit.cli import run_cli
from testkit.synthetic import make_flat_dataset, photo_bytes


def assert_clean_error(proc, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one sentence, nothing else
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_evaluate_predict_round_trip(tmp_path):
    data = make_flat_dataset(tmp_path / "data", per_class=12)
    out = tmp_path / "out"
    proc = run_cli("train", "--data", str(data), "--out", str(out), "--epochs", "2",
                   "--image-size", "32", "--batch-size", "8", "--no-augment",
                   "--learning-rate", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert "saved" in proc.stdout and (out / "model.keras").exists()
    assert "epoch 2:" in proc.stderr  # per-epoch progress lines
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["augment"] is False and card["config"]["epochs"] == 2
    assert "plateau schedule" in proc.stderr and card["precision"] in ("float32", "bfloat16")

    proc = run_cli("evaluate", "--model", str(out / "model.keras"), "--data", str(data),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == 24 and 0 <= report["accuracy"] <= 1
    assert sum(map(sum, report["confusion"])) == 24

    files = [data / "cat.0.jpg", data / "dog.1.jpg"]
    proc = run_cli("predict", "--model", str(out / "model.keras"), *map(str, files))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, files, strict=True):
        name, label, *_ = line.split("\t")
        assert name == str(path) and label in ("cat", "dog")

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"nope")
    proc = run_cli("predict", "--model", str(out / "model.keras"), str(files[0]), str(bad))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "error: not a photo" in proc.stdout.splitlines()[1]


def test_missing_folder(tmp_path):
    assert_clean_error(run_cli("scan", str(tmp_path / "nope")), "does not exist")
    assert_clean_error(run_cli("train", "--data", str(tmp_path / "nope"), "--out",
                               str(tmp_path / "o")), "does not exist")


def test_empty_dataset(tmp_path):
    assert_clean_error(run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o")),
                       "no usable cat or dog photos")


def test_unreadable_model(tmp_path):
    (tmp_path / "model.keras").write_text("garbage")
    (tmp_path / "cat.1.jpg").write_bytes(photo_bytes("cat"))
    assert_clean_error(run_cli("evaluate", "--model", str(tmp_path / "model.keras"),
                               "--data", str(tmp_path)), "cannot load the model")
    assert_clean_error(run_cli("predict", "--model", str(tmp_path / "missing.keras"),
                               str(tmp_path / "cat.1.jpg")), "does not exist")


@pytest.mark.parametrize("args,needle", [
    (["--learning-rate", "-0.1"], "learning_rate: must be at least"),
    (["--epochs", "0"], "epochs: must be at least 1"),
    (["--epochs", "ten"], "invalid int value"),
    (["--recipe", "resnet"], "invalid choice"),
    (["--colour", "red"], "unrecognized arguments"),
    (["--schedule", "linear"], "invalid choice"),
    (["--label-smoothing", "0.9"], "label_smoothing: must be at most 0.4"),
    (["--weight-decay", "-1"], "weight_decay: must be at least 0"),
])
def test_bad_options(tmp_path, args, needle):
    make_flat_dataset(tmp_path, per_class=2, size=16)
    assert_clean_error(run_cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                               *args), needle)
    assert not (tmp_path / "o").exists()  # nothing started, nothing written


def test_a_bad_option_is_answered_before_tensorflow_is_loaded(tmp_path):
    """Loading TensorFlow takes seconds: a mistyped rate should not wait for it."""
    import subprocess
    import sys

    from testkit.paths import ROOT

    code = ("import sys\nfrom ml.cli import main\n"
            f"rc = main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r},"
            " '--learning-rate', '-1'])\n"
            "print(rc, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "learning_rate: must be at least" in done.stderr


def test_every_config_key_is_a_train_option():
    """docs/CONFIGURATION.md says the config keys are `train`'s long options with underscores."""
    from dataclasses import fields

    from ml.cli import _config_from_args, build_parser
    from ml.config import TrainConfig

    args = ["train", "--data", "d", "--out", "o"]
    for field in fields(TrainConfig):
        if field.name == "augment":
            args.append("--no-augment")
        elif field.name == "recipe":
            args += ["--recipe", "flash_cnn"]
        elif field.name == "schedule":
            args += ["--schedule", "cosine"]
        elif field.name == "precision":
            args += ["--precision", "float32"]
        else:
            args += ["--" + field.name.replace("_", "-"), "3"]
    config = _config_from_args(build_parser().parse_args(args))
    assert set(config) == {f.name for f in fields(TrainConfig)}
