"""Predict API, model downloads and the served front-end libraries, over HTTP on the real stack."""

from __future__ import annotations

from testkit.synthetic import photo_bytes


def test_predict_api_answers_each_photo(idle_lab):
    run_id = idle_lab.finished_run()
    files = [("photos", ("cat.jpg", photo_bytes("cat", size=96, seed=3), "image/jpeg")),
             ("photos", ("dog.png", photo_bytes("dog", fmt="PNG", size=64, seed=4), "image/png")),
             ("photos", ("empty.jpg", b"", "image/jpeg"))]
    resp = idle_lab.post("/api/predict", files=files, data={"model": run_id})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"]["run_id"] == run_id
    cat, dog, empty = body["results"]
    assert cat["label"] == "cat" and dog["label"] == "dog"  # the tiny model learnt the colours
    assert 0.5 <= cat["confidence"] <= 1 and cat["heatmap"].startswith("data:image/png;base64,")
    assert empty["filename"] == "empty.jpg" and "empty" in empty["error"]

    only_bad = idle_lab.post("/api/predict", files=[("photos", ("x.jpg", b"junk", "image/jpeg"))])
    assert only_bad.status_code == 415 and "not a photo" in only_bad.json()["error"]
    assert idle_lab.post("/api/predict").status_code == 400
    unknown = idle_lab.post("/api/predict", data={"model": "nope"},
                            files=[("photos", ("c.jpg", photo_bytes(), "image/jpeg"))])
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    many = [("photos", (f"{i}.jpg", photo_bytes(seed=i), "image/jpeg")) for i in range(17)]
    assert idle_lab.post("/api/predict", files=many).status_code == 413
    huge = idle_lab.post("/api/predict",
                         files=[("photos", ("big.jpg", b"\xff" * (21 * 2**20), "image/jpeg"))])
    assert huge.status_code == 413 and "20 MB" in huge.json()["error"]


def test_model_download_and_front_end_libraries(idle_lab):
    run_id = idle_lab.finished_run()
    model = idle_lab.get(f"/runs/{run_id}/model.keras")
    assert model.status_code == 200 and model.content[:2] == b"PK"  # a .keras file is a zip
    assert "attachment" in model.headers["Content-Disposition"]
    assert idle_lab.get("/runs/nope/model.keras").status_code == 404
    plotly = idle_lab.get("/vendor/plotly.min.js")
    assert plotly.status_code == 200 and b"plotly" in plotly.content[:2000].lower()
    sio = idle_lab.get("/vendor/socket.io.min.js")
    assert sio.status_code == 200 and b"io" in sio.content[:4000]
    # Every page links only to the app's own scripts: no CDN.
    for path in ("/dataset", "/train", "/runs", f"/runs/{run_id}", "/predict"):
        html = idle_lab.get(path).text
        assert "cdn." not in html and "https://" not in html.replace(
            "https://www.w3.org", "")


def test_train_form_left_blank_takes_the_recipes_settings_and_names_bad_choices(idle_lab):
    base = {"recipe": "sprint_cnn", "image_size": "32", "batch_size": "8", "val_split": "0.15",
            "early_stopping_patience": "2", "lr_factor": "0.5", "lr_patience": "1",
            "seed": "1", "limit": "24"}
    # Epochs, schedule and smoothing left blank (or not sent): sprint_cnn's own.
    form = idle_lab.post("/train", data={**base, "epochs": "", "label_smoothing": ""},
                         allow_redirects=False)
    assert form.status_code == 302, form.text[-500:]
    run_id = form.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    config = idle_lab.run(run_id)["config"]
    assert (config["epochs"], config["schedule"], config["label_smoothing"]) == (
        12, "one_cycle", 0.1)
    assert config["precision"] == "auto"
    started = idle_lab.wait_event(run_id, "run_started")
    assert started["precision"] in ("float32", "bfloat16")  # what auto chose on the worker
    idle_lab.post(f"/api/runs/{run_id}/cancel")
    # A value that is not one of the choices is marked on the form, naming them.
    bad = idle_lab.post("/train", data={**base, "epochs": "2", "schedule": "linear",
                                        "precision": "fp8"})
    assert bad.status_code == 200 and "Some settings need fixing" in bad.text
    assert "one_cycle" in bad.text and "bfloat16" in bad.text
    assert idle_lab.get("/api/runs").json()["runs"][0]["id"] == run_id  # nothing queued
