"""Prediction from bytes in any format, Grad-CAM, and evaluation of a saved model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.errors import ImageError, ModelError
from ml.evaluate import evaluate
from ml.model_io import load_model
from ml.predict import explain_bytes, load_rgb, predict_bytes, predict_images, read_photo
from testkit.finished_runs import finished_run
from testkit.paths import SHARED_TRAIN
from testkit.synthetic import photo_bytes, synthetic_photo


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(tiny_model / "model.keras")


def test_tiny_model_learned_and_evaluate_reports_confusion(loaded, tiny_dataset):
    report = evaluate(loaded, tiny_dataset)
    assert report["n"] == 48
    assert sum(map(sum, report["confusion"])) == 48
    (dd, dc), (cd, cc) = report["confusion"]
    assert report["accuracy"] == pytest.approx((dd + cc) / 48)
    assert report["accuracy"] >= 0.9  # warm vs cool colours: trivially learnable
    assert len(report["misclassified"]) == report["errors"] == dc + cd


def test_predict_matches_the_training_pipeline(loaded, tiny_dataset):
    """Photos decoded by Pillow for prediction score like the tf.data pipeline does."""
    report = evaluate(loaded, tiny_dataset)
    paths = sorted(tiny_dataset.iterdir())
    results = predict_images(loaded, [p.read_bytes() for p in paths])
    right = sum(r["label"] == p.name.split(".")[0] for p, r in zip(paths, results, strict=True))
    assert right / len(paths) == pytest.approx(report["accuracy"], abs=1 / 48)
    for r in results:
        assert 0 <= r["cat_probability"] <= 1
        assert r["confidence"] == pytest.approx(max(r["cat_probability"],
                                                    1 - r["cat_probability"]))


def _png_16bit() -> bytes:
    arr = (np.asarray(synthetic_photo("cat").convert("L"), dtype=np.uint16) * 256)
    buf = io.BytesIO()
    Image.fromarray(arr.astype("<u2")).save(buf, format="PNG")
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [synthetic_photo("dog", seed=s) for s in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("data", [
    photo_bytes("cat", "PNG", mode="RGBA"),
    photo_bytes("cat", "JPEG", mode="L"),
    photo_bytes("cat", "JPEG", mode="CMYK"),
    photo_bytes("dog", "WEBP"),
    photo_bytes("dog", "TIFF"),
    photo_bytes("dog", "BMP"),
    photo_bytes("dog", "PNG", mode="P"),
    _png_16bit(),
    _animated_gif(),
], ids=["rgba-png", "grey-jpeg", "cmyk-jpeg", "webp", "tiff", "bmp", "palette-png",
        "16bit-png", "animated-gif"])
def test_any_pillow_format_predicts(loaded, data):
    result = predict_bytes(loaded, data)
    assert result["label"] in ("cat", "dog") and 0 <= result["cat_probability"] <= 1


def test_conversions_give_sensible_rgb():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    assert load_rgb(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)  # flattened on white
    grey16 = load_rgb(_png_16bit())
    assert grey16.mode == "RGB" and 0 < np.asarray(grey16).mean() < 255  # scaled, not clipped


def test_exif_orientation_is_respected():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes())
    upright = load_rgb(buf.getvalue())
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 2)), upright.getpixel((10, 37))
    assert top[0] > 200 and top[2] < 60  # red on top once rotated clockwise
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("data,message,status", [
    (b"", "empty", 422),
    (b"plain text, not a photo", "not a photo", 415),
    (b"%PDF-1.7 ...", "a PDF document, not a photo", 415),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "HEIC photo .*export it as JPEG", 415),
    (photo_bytes("cat")[:300], "corrupt or truncated", 422),
])
def test_bad_photos_raise_clear_image_errors(loaded, data, message, status):
    with pytest.raises(ImageError, match=message) as caught:
        predict_bytes(loaded, data)
    assert caught.value.status == status


NOT_A_PET = "this doesn't look like a photo of a pet"


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _grey_with_noise() -> Image.Image:
    # A flat grey with the faint noise a camera or an encoder leaves: still nothing to judge.
    rng = np.random.default_rng(3)
    return Image.fromarray(np.clip(128 + rng.normal(0, 1, (48, 64, 3)), 0, 255).astype(np.uint8))


BLANK = {
    "transparent-png": _encoded(Image.new("RGBA", (64, 48), (30, 120, 200, 0)), "PNG"),
    "flat-grey-jpeg": _encoded(Image.new("RGB", (64, 48), (128, 128, 128)), "JPEG"),
    "flat-red-png": _encoded(Image.new("RGB", (64, 48), (255, 0, 0)), "PNG"),
    "faintly-noisy-grey-jpeg": _encoded(_grey_with_noise(), "JPEG"),
}


def _real_photo() -> bytes:
    if not SHARED_TRAIN.is_dir():
        pytest.skip(f"real photos not found at {SHARED_TRAIN}")
    return next(SHARED_TRAIN.glob("cat.*.jpg")).read_bytes()


@pytest.mark.parametrize("data", list(BLANK.values()), ids=list(BLANK))
def test_an_image_with_nothing_to_judge_gets_no_verdict(loaded, data):
    # Issue 33: a fully transparent PNG was answered "cat, 94 % sure".
    for predict in (predict_bytes, explain_bytes):
        with pytest.raises(ImageError, match=NOT_A_PET) as caught:
            predict(loaded, data)
        assert caught.value.status == 422  # as a corrupt photo is answered


def test_photos_with_something_in_them_still_get_a_verdict(loaded):
    on_flat = Image.new("RGB", (64, 48), (128, 128, 128))
    on_flat.paste((90, 60, 40), (24, 16, 40, 32))  # a small subject on a plain background
    cut_out = synthetic_photo("cat", size=64).convert("RGBA")
    alpha = Image.new("L", (64, 64), 0)
    alpha.paste(255, (16, 16, 48, 48))
    cut_out.putalpha(alpha)  # a cut-out: transparent around the animal
    for data in (photo_bytes("cat", size=64), photo_bytes("dog", "PNG", size=48, seed=4),
                 _encoded(on_flat, "JPEG"), _encoded(cut_out, "PNG")):
        assert predict_bytes(loaded, data)["label"] in ("cat", "dog")
        assert explain_bytes(loaded, data)["label"] in ("cat", "dog")


def test_a_real_photo_still_gets_a_verdict(loaded):
    data = _real_photo()
    assert predict_bytes(loaded, data)["label"] in ("cat", "dog")
    assert explain_bytes(loaded, data)["label"] in ("cat", "dog")


def test_real_photos_are_never_taken_for_blank_ones():
    if not SHARED_TRAIN.is_dir():
        pytest.skip(f"real photos not found at {SHARED_TRAIN}")
    paths = sorted(SHARED_TRAIN.glob("*.jpg"))[:400]
    assert [p.name for p in paths if read_photo(p.read_bytes()).blank] == []


def test_the_api_answers_an_image_with_nothing_to_judge_like_a_corrupt_photo(
        app, client, tiny_model):
    finished_run(app.extensions["lab_runs"], tiny_model, recipe="fast_cnn", best=0.9, val=100)

    def post(*files: tuple[bytes, str]):
        return client.post("/api/predict", data={
            "photos": [(io.BytesIO(data), name) for data, name in files]})

    corrupt = post((photo_bytes("cat")[:300], "cut.jpg"))
    assert corrupt.status_code == 422
    for name, data in BLANK.items():
        resp = post((data, name))
        assert resp.status_code == corrupt.status_code, (name, resp.json)
        assert set(resp.json) == set(corrupt.json)
        assert set(resp.json["results"][0]) == set(corrupt.json["results"][0])
        assert resp.json["error"].startswith(NOT_A_PET), resp.json["error"]
        assert resp.json["results"][0]["status"] == 422
    # Beside photos, the blank one alone is refused: the others are judged.
    photos = [(photo_bytes("dog", size=48), "dog.jpg"), (BLANK["transparent-png"], "clear.png")]
    if SHARED_TRAIN.is_dir():
        photos.append((_real_photo(), "real.jpg"))
    mixed = post(*photos)
    assert mixed.status_code == 200
    results = mixed.json["results"]
    assert results[0]["label"] in ("cat", "dog") and results[1]["error"].startswith(NOT_A_PET)
    assert all(r["label"] in ("cat", "dog") for r in results[2:])


def test_huge_dimensions_are_refused_before_decoding(loaded):
    buf = io.BytesIO()
    Image.new("L", (10_000, 6_000)).save(buf, format="PNG")  # 60 MP, tiny file
    with pytest.raises(ImageError, match="too large") as caught:
        predict_bytes(loaded, buf.getvalue())
    assert caught.value.status == 413


def test_gradcam_heatmap_and_overlay(loaded):
    result = explain_bytes(loaded, photo_bytes("cat", size=64))
    heat = result["heatmap"]
    assert heat.ndim == 2 and heat.shape[0] > 1
    assert heat.min() >= 0 and heat.max() <= 1
    overlay = Image.open(io.BytesIO(result["overlay_png"]))
    assert overlay.format == "PNG" and overlay.size == (64, 64)
    assert result["label"] in ("cat", "dog")


def test_unreadable_model_is_a_model_error(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable .keras file"):
        load_model(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nothing.keras")
