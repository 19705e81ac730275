"""Shared fixtures: tests make their own small photos; none are committed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.synthetic import make_flat_dataset
from ml.tf_env import import_tensorflow_quietly

import_tensorflow_quietly()  # keeps TensorFlow's C++ banners out of the test log

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "dogs-vs-cats" / "train"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """24 cats and 24 dogs at 40 px in the Kaggle layout."""
    return make_flat_dataset(tmp_path_factory.mktemp("tiny") / "train", per_class=24)


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> Path:
    """A fast_cnn trained for 3 epochs on the tiny dataset: its folder holds model + card."""
    from ml.train import train

    out = tmp_path_factory.mktemp("tiny_model")
    train({"epochs": 3, "image_size": 32, "batch_size": 8, "learning_rate": 0.01,
           "augment": False}, tiny_dataset, out)
    return out


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run ``python -m ml ...`` as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ml", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def lab(tiny_dataset, tmp_path_factory):
    """The real stack (redis-server, Celery worker, web server) over the tiny dataset."""
    from tests.lab_stack import LabStack

    stack = LabStack(tmp_path_factory.mktemp("lab"), tiny_dataset).start()
    yield stack
    stack.stop()


@pytest.fixture
def idle_lab(lab):
    """The stack with nothing queued or running before and after the test."""
    for part, start in ((lab.redis, lab.start_redis), (lab.worker, lab.start_worker),
                        (lab.web, lab.start_web)):
        if part is None or not part.alive():
            start()
    lab.cancel_active()
    yield lab
    lab.cancel_active()
