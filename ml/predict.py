"""Predict cat or dog from image bytes, and explain it with a Grad-CAM heat-map."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ml.errors import ImageError
from ml.model_io import LoadedModel

log = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # larger photos are refused before decoding (decompression bombs)


def load_rgb(data: bytes) -> Image.Image:
    """Decode any Pillow-readable photo to RGB, upright per its EXIF orientation.

    Greyscale, palette, 16-bit, CMYK and transparent images are converted; transparency is
    flattened onto white. Animated images use their first frame.
    """
    if not data:
        raise ImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"the photo is too large ({width}x{height} pixels; "
                                 f"at most {MAX_PIXELS // 1_000_000} megapixels)")
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (JPEG, PNG, GIF, BMP, WebP, TIFF...)"
                         ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the photo is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image is corrupt or truncated ({exc})") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip to white.
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() or 1.0
        image = Image.fromarray((arr * (255.0 / top)).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


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
    batch = np.stack([to_model_input(load_rgb(data), loaded.image_size) for data in images])
    probs = np.asarray(loaded.model(batch, training=False)).reshape(-1)
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


def gradcam(loaded: LoadedModel, image: Image.Image) -> tuple[np.ndarray, float]:
    """Grad-CAM heat-map (h, w) in [0, 1] for the predicted class, and the cat probability.

    Gradients are taken of the logit (before the sigmoid) so a confident prediction, whose
    sigmoid is flat, still gets a meaningful map.
    """
    import keras
    import tensorflow as tf

    model = loaded.model
    conv_layer = _last_conv_layer(model)
    head = model.layers[-1]
    outputs = [conv_layer.output, model.output]
    use_logit = isinstance(head, keras.layers.Dense) and head.units == 1
    if use_logit:
        outputs.append(head.input)
    grad_model = keras.Model(model.inputs, outputs)
    x = tf.convert_to_tensor(to_model_input(image, loaded.image_size)[None])
    with tf.GradientTape() as tape:
        out = grad_model(x, training=False)
        conv, prob = out[0], out[1]
        if use_logit:
            score = tf.matmul(out[2], head.kernel) + head.bias
        else:
            score = tf.math.log(prob + 1e-7) - tf.math.log(1 - prob + 1e-7)
        p = float(prob.numpy().reshape(-1)[0])
        score = score if p >= 0.5 else -score  # explain the class that was predicted
    grads = tape.gradient(score, conv)
    weights = tf.reduce_mean(grads, axis=(0, 1, 2))
    cam = tf.nn.relu(tf.reduce_sum(conv[0] * weights, axis=-1)).numpy()
    top = cam.max()
    cam = cam / top if top > 0 else np.zeros_like(cam)
    return cam.astype(np.float32), p


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
    blended.save(buf, format="PNG")
    return buf.getvalue()


def explain_bytes(loaded: LoadedModel, data: bytes) -> dict[str, Any]:
    """Prediction plus Grad-CAM: ``{label, cat_probability, confidence, heatmap, overlay_png}``."""
    image = load_rgb(data)
    heatmap, p = gradcam(loaded, image)
    return {**_result(p), "heatmap": heatmap, "overlay_png": overlay_png(image, heatmap)}
