"""Predict's default model: the surest run, not a lucky one scored on a handful of photos."""

from __future__ import annotations

import io
import re

import pytest

from core.ranking import accuracy_floor
from testkit.finished_runs import finished_run
from testkit.synthetic import photo_bytes


def test_accuracy_floor_weighs_how_many_photos_a_score_rests_on():
    assert accuracy_floor(1.0, 8) == pytest.approx(0.676, abs=0.001)
    assert accuracy_floor(520 / 540, 540) == pytest.approx(0.943, abs=0.001)
    assert accuracy_floor(0.5, 10_000) == pytest.approx(0.490, abs=0.001)
    # Unknown count or no score: below any measured run.
    assert accuracy_floor(1.0, None) == 0.0 and accuracy_floor(None, 540) == 0.0


def test_default_model_is_the_surest_run_and_the_page_says_on_how_many_photos(
        app, client, tiny_model):
    service = app.extensions["lab_runs"]  # no queue is needed to predict
    lucky = finished_run(service, tiny_model, recipe="fast_cnn", best=1.0, val=8)
    sure = finished_run(service, tiny_model, recipe="res_cnn", best=0.955, val=540)
    unknown = finished_run(service, tiny_model, recipe="seed_cnn", best=0.99, val=None)

    page = client.get("/predict").get_data(as_text=True)
    options = re.findall(r'<option value="(\w+)"[^>]*>([^<]*)</option>', page)
    assert [run_id for run_id, _ in options] == [sure, lucky, unknown]
    assert f'value="{sure}" selected' in page
    assert "95.5 % validation accuracy on 540 photos (default: the surest)" in options[0][1]
    assert "100.0 % validation accuracy on 8 photos" in options[1][1]
    assert "photos" not in options[2][1]  # no count: none claimed

    # The API picks the same default when it is not told which model to use.
    resp = client.post("/api/predict", data={
        "photos": [(io.BytesIO(photo_bytes("cat", size=32)), "cat.jpg")]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.json["model"]["run_id"] == sure
    assert resp.json["model"]["recipe"] == "res_cnn"
