"""Predict cat or dog from image bytes, and explain it with a Grad-CAM heat-map."""

from __future__ import annotations

import io
import logging
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, ImageStat, UnidentifiedImageError

from ml.errors import ImageError
from ml.formats import sniff
from ml.model_io import LoadedModel

log = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # larger photos are refused before decoding (decompression bombs)
MAX_SIDE = 30_000  # and so are absurd shapes, such as a 1 x 40,000,000 strip
# The formats a photo may be in, decided by its bytes, never its name. Pillow is asked to
# try only these, so no other decoder (EPS calls Ghostscript, for one) ever sees an upload.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG includes MPO
ACCEPTED = "JPEG, PNG, GIF, BMP, WebP or TIFF"
# Pillow warns about every oddity of a malformed file; uploads are refused or not, either way
# the web log need not repeat the decoder's complaints.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Our own, lower limit (MAX_PIXELS) refuses these before Pillow's warning would matter.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
Image.init()  # registers every plugin, so Image.open(formats=FORMATS) knows WebP and TIFF
# Things people upload by mistake, known by their first bytes: a kinder message than "no".
_KNOWN = ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a zip archive"),
          (b"\x1f\x8b", "a gzip archive"), (b"<svg", "an SVG drawing"),
          (b"<?xml", "an XML file"), (b"<!DOCTYPE", "a web page"), (b"<html", "a web page"),
          (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"), (b"8BPS", "a Photoshop file"),
          (b"\x7fELF", "a program"), (b"MZ", "a program"))
# An image whose every channel varies less than this (of 255) is one flat colour, give or
# take an encoder's noise: a real photo, even of a white cat on snow, varies far more.
FLAT_STDDEV = 2.0
NOT_A_PET = "this doesn't look like a photo of a pet"


def _not_a_photo(data: bytes) -> ImageError:
    """The error for bytes Pillow cannot identify, saying what they look like if we know."""
    head = data[:64].lstrip()
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return ImageError("this is an HEIC photo (iPhone), which this lab cannot read: export "
                          "it as JPEG, or set the camera to 'Most Compatible'", 415)
    if sniff(data, prefix=4) is not None:  # 4 bytes: a PNG sent as text still starts like one
        return ImageError("the image is corrupt: it starts like a photo but could not be "
                          "decoded", 422)
    kind = next((kind for magic, kind in _KNOWN if head.startswith(magic)), None)
    if head[4:8] == b"ftyp":
        kind = "a video or HEIF file"
    return ImageError((f"this is {kind}, not a photo" if kind else "not a photo this lab "
                       "can read") + f": send a {ACCEPTED} file", 415)


@dataclass
class Photo:
    """A decoded upload: upright RGB, the format its bytes are in, its size as sent, notes
    on what was converted for the model, and why it has nothing to judge (fully
    transparent, one flat colour), if so: prediction refuses those (see judged_photo)."""

    image: Image.Image
    format: str
    size: tuple[int, int]
    notes: list[str]
    blank: str | None = None


def _blank(rgb: Image.Image, transparent: bool) -> str | None:
    """Why an image has nothing in it to judge, or None: a model asked anyway answers
    "cat" or "dog" about nothing, and sounds sure."""
    if transparent:
        return "it is fully transparent, so there is nothing in it to judge"
    if max(ImageStat.Stat(rgb).stddev) < FLAT_STDDEV:
        return "it is all one colour, so there is nothing in it to judge"
    return None


def read_photo(data: bytes) -> Photo:
    """Decode a photo to upright RGB, noting what was converted for the model.

    Greyscale, palette, 16-bit, CMYK and transparent images are converted (transparency is
    flattened onto white), animated ones use their first frame: each says so in a note.
    Raises ImageError, with an HTTP status, for anything that is not a readable photo; one
    with nothing in it to judge is read, with ``blank`` saying why (judged_photo refuses it).
    """
    if not data:
        raise ImageError("the file is empty", 422)
    notes: list[str] = []
    transparent = False
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
            raise ImageError(f"the photo is too large ({width}x{height} pixels; at most "
                             f"{MAX_PIXELS // 1_000_000} megapixels and {MAX_SIDE:,} pixels "
                             f"a side)", 413)
        if width < 1 or height < 1:
            raise ImageError("the image has no pixels", 422)
        fmt = "JPEG" if image.format == "MPO" else str(image.format)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated ({frames} frames): the first frame was used")
        if image.format in ("JPEG", "MPO"):
            # Decode at the smallest DCT scale still >= 1024 px: big phone photos cost
            # a fraction of a full decode, and the model sees at most 512 px anyway.
            image.draft("RGB" if image.mode != "CMYK" else "CMYK", (1024, 1024))
        image.load()
        if image.mode == "CMYK":
            notes.append("CMYK colours were converted to RGB")
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # 16/32-bit greyscale: scale to 8 bits rather than clip to white.
            arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
            arr -= min(arr.min(), 0.0)
            top = arr.max() or 1.0
            image = Image.fromarray((arr * (255.0 / top)).astype(np.uint8))
            notes.append("a 16-bit image: scaled to 8 bits")
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P"
                                                   and "transparency" in image.info):
            rgba = image.convert("RGBA")
            transparent = rgba.getchannel("A").getextrema() == (0, 0)
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        rgb = image.convert("RGB")
        return Photo(rgb, fmt, (width, height), notes, _blank(rgb, transparent))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise _not_a_photo(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
        raise ImageError("the photo is too large to decode safely", 413) from None
    except Exception as exc:  # noqa: BLE001 - a hostile file can trip any decoder error
        log.info("unreadable upload: %s: %s", type(exc).__name__, exc)
        raise ImageError("the image is corrupt or truncated: it could not be decoded", 422
                         ) from None


def load_rgb(data: bytes) -> Image.Image:
    """Decode any accepted photo to upright RGB (see read_photo)."""
    return read_photo(data).image


def judged_photo(data: bytes) -> Photo:
    """A photo to predict on: read_photo's, refused (ImageError, 422, as a corrupt photo
    is) when there is nothing in it to judge."""
    photo = read_photo(data)
    if photo.blank:
        raise ImageError(f"{NOT_A_PET}: {photo.blank}", 422)
    return photo


def to_model_input(image: Image.Image, image_size: int) -> np.ndarray:
    """Resize exactly as the training pipeline does: (size, size, 3) float32 in 0..255."""
    from ml.pipeline import resize_to_uint8

    return resize_to_uint8(np.asarray(image, dtype=np.uint8), image_size).numpy().astype(
        np.float32)


def _result(p: float) -> dict[str, Any]:
    label = "cat" if p >= 0.5 else "dog"
    return {"label": label, "cat_probability": p, "confidence": p if label == "cat" else 1 - p}


def predict_images(loaded: LoadedModel, images: list[bytes]) -> list[dict[str, Any]]:
    """One ``{label, cat_probability, confidence}`` per photo (bytes); ImageError if one is bad."""
    batch = np.stack([to_model_input(judged_photo(data).image, loaded.image_size)
                      for data in images])
    probs = np.asarray(_forward(loaded)(batch)).reshape(-1)
    return [_result(float(p)) for p in probs]


def predict_bytes(loaded: LoadedModel, data: bytes) -> dict[str, Any]:
    """``{label, cat_probability, confidence}`` for one photo given as bytes."""
    return predict_images(loaded, [data])[0]


def _last_conv_layer(model):
    """The last layer with a spatial (4-D) output: what Grad-CAM looks at."""
    for layer in reversed(model.layers):
        if layer.name == "image" or layer.name.startswith(("aug_", "scale")):
            continue
        if len(getattr(layer.output, "shape", ())) == 4:
            return layer
    raise ImageError("this model has no convolution layer to explain")


_explainers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_forwards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_explainers_lock = threading.Lock()


def _forward(loaded: LoadedModel):
    """The model's inference pass as a tf.function, traced once for any batch size."""
    import tensorflow as tf

    with _explainers_lock:
        if loaded not in _forwards:
            size, model = loaded.image_size, loaded.model  # not `loaded`: the key must die
            _forwards[loaded] = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32)])
        return _forwards[loaded]


def _explainer(loaded: LoadedModel):
    """A compiled (tf.function) Grad-CAM for one loaded model, built once: in graph mode
    the forward and backward pass take a fraction of eager mode's time."""
    import keras
    import tensorflow as tf

    with _explainers_lock:
        if loaded in _explainers:
            return _explainers[loaded]
        model = loaded.model
        head = model.layers[-1]
        outputs = [_last_conv_layer(model).output, model.output]
        use_logit = isinstance(head, keras.layers.Dense) and head.units == 1
        if use_logit:
            outputs.append(head.input)
        grad_model = keras.Model(model.inputs, outputs)
        size = loaded.image_size

        @tf.function(input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
        def explain(x):
            with tf.GradientTape() as tape:
                out = grad_model(x, training=False)
                conv, prob = out[0], out[1]
                if use_logit:
                    score = tf.matmul(out[2], head.kernel) + head.bias
                else:
                    score = tf.math.log(prob + 1e-7) - tf.math.log(1 - prob + 1e-7)
                p = tf.reshape(prob, [-1])[0]
                score = tf.where(p >= 0.5, score, -score)  # explain the predicted class
            grads = tape.gradient(score, conv)
            weights = tf.reduce_mean(grads, axis=(0, 1, 2))
            cam = tf.nn.relu(tf.reduce_sum(conv[0] * weights, axis=-1))
            top = tf.reduce_max(cam)
            cam = tf.where(top > 0, cam / tf.maximum(top, 1e-12), tf.zeros_like(cam))
            return cam, p

        _explainers[loaded] = explain
        return explain


def gradcam(loaded: LoadedModel, image: Image.Image) -> tuple[np.ndarray, float]:
    """Grad-CAM heat-map (h, w) in [0, 1] for the predicted class, and the cat probability.

    Gradients are taken of the logit (before the sigmoid) so a confident prediction, whose
    sigmoid is flat, still gets a meaningful map.
    """
    cam, p = _explainer(loaded)(to_model_input(image, loaded.image_size)[None])
    return cam.numpy().astype(np.float32), float(p)


def overlay_png(image: Image.Image, heatmap: np.ndarray, max_side: int = 512,
                alpha: float = 0.45) -> bytes:
    """The photo with the heat-map blended over it (turbo colours), as PNG bytes."""
    from matplotlib import colormaps

    shown = image.copy()
    shown.thumbnail((max_side, max_side))
    heat = Image.fromarray(np.uint8(np.clip(heatmap, 0, 1) * 255)).resize(
        shown.size, Image.Resampling.BILINEAR)
    colours = colormaps["turbo"](np.asarray(heat) / 255.0)[..., :3]
    heat_rgb = Image.fromarray(np.uint8(colours * 255))
    blended = Image.blend(shown, heat_rgb, alpha)
    buf = io.BytesIO()
    blended.save(buf, format="PNG", compress_level=1)  # 4x faster to write than level 6
    return buf.getvalue()


def explain_bytes(loaded: LoadedModel, data: bytes) -> dict[str, Any]:
    """Prediction plus Grad-CAM.

    ``{label, cat_probability, confidence, heatmap, overlay_png, format, size, notes}``.
    """
    photo = judged_photo(data)
    heatmap, p = gradcam(loaded, photo.image)
    return {**_result(p), "heatmap": heatmap, "overlay_png": overlay_png(photo.image, heatmap),
            "format": photo.format, "size": photo.size, "notes": photo.notes}
