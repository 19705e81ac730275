"""mobilenet_v2 transfer learning: random weights here, real download code against a local
HTTP server the test starts, and a clear message when the weights cannot be fetched."""

from __future__ import annotations

import functools
import http.server
import socket
import threading

import numpy as np
import pytest

from core.settings import load_ml_options
from ml.errors import WeightsDownloadError
from ml.model_io import load_model
from ml.predict import explain_bytes
from ml.recipes import mobilenet_weights_file
from ml.train import train
from testkit.cli import run_cli
from testkit.synthetic import photo_bytes

TINY = {"recipe": "mobilenet_v2", "image_size": 32, "batch_size": 8, "epochs": 1,
        "augment": False}


@pytest.fixture()
def weights_server(tmp_path):
    """Serve a MobileNetV2 weights file (random, in Keras's legacy h5 layout) over HTTP."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    served = tmp_path / "served"
    served.mkdir()
    source = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                            weights=None)
    with h5py.File(served / mobilenet_weights_file(32), "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, source)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", source, requests
    server.shutdown()


def test_random_weights_train_and_explain(tiny_dataset, tmp_path):
    summary = train(TINY, tiny_dataset, tmp_path, pretrained=False)
    assert summary["status"] == "succeeded" and summary["recipe"] == "mobilenet_v2"
    loaded = load_model(tmp_path)
    result = explain_bytes(loaded, photo_bytes("dog", size=48))
    assert result["heatmap"].ndim == 2 and result["label"] in ("cat", "dog")


def test_weights_are_downloaded_cached_and_used(tiny_dataset, tmp_path, monkeypatch,
                                                weights_server):
    url, source, requests = weights_server
    monkeypatch.setenv("LAB_WEIGHTS_BASE_URL", url)
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path / "cache"))
    train({**TINY, "augment": True}, tiny_dataset, tmp_path / "run1", options=load_ml_options())
    assert requests == ["/" + mobilenet_weights_file(32)]
    assert (tmp_path / "cache" / "models" / mobilenet_weights_file(32)).exists()
    model = load_model(tmp_path / "run1").model
    # the frozen base carries exactly the served weights
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0],
                                  source.get_layer("Conv1").get_weights()[0])
    train(TINY, tiny_dataset, tmp_path / "run2", options=load_ml_options())
    assert len(requests) == 1  # second run uses the cache


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_a_clear_error(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_WEIGHTS_BASE_URL", f"http://127.0.0.1:{_closed_port()}/")
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path / "cache"))
    events: list[dict] = []
    with pytest.raises(WeightsDownloadError, match="offline"):
        train(TINY, tiny_dataset, tmp_path / "out", on_event=events.append,
              options=load_ml_options())
    assert events[-1]["status"] == "failed" and "fast_cnn" in events[-1]["error"]
    proc = run_cli("train", "--data", str(tiny_dataset), "--out", str(tmp_path / "o"),
                   "--recipe", "mobilenet_v2", "--image-size", "32", "--epochs", "1",
                   env={"LAB_WEIGHTS_BASE_URL": f"http://127.0.0.1:{_closed_port()}/",
                        "LAB_WEIGHTS_DIR": str(tmp_path / "cache")})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "could not download the ImageNet weights" in proc.stderr
