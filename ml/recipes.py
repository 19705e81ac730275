"""Model recipes, a registry by name.

Every model takes (size, size, 3) images with values 0..255 and outputs one sigmoid unit:
the probability that the photo is a cat (label 1). Scaling and augmentation are layers
inside the model, so a saved ``.keras`` file carries its own preprocessing.

TensorFlow/Keras are imported inside the builders: importing this module stays cheap, so the
web process can list recipes without loading TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ml.errors import ModelError, WeightsDownloadError
from ml.options import MlOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """A named way to build a model, with the settings it works best with."""

    name: str
    description: str
    image_size: int
    learning_rate: float
    build: Callable[..., Any]
    min_image_size: int = 32
    # What a run of this recipe uses unless told otherwise (see ml.config.RECIPE_DEFAULTS).
    epochs: int = 20
    schedule: str = "plateau"
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    small_image_size: int | None = None  # progressive resizing, see ml.config.TrainConfig
    small_epochs: int = 0
    # Global pooling before the head: the same weights take photos of any size, which
    # progressive resizing needs.
    any_size: bool = False


def _augmentation(x):
    """Random flip, small rotation and zoom: active only while training."""
    from keras import layers

    x = layers.RandomFlip("horizontal", name="aug_flip")(x)
    x = layers.RandomRotation(0.06, fill_mode="reflect", name="aug_rotate")(x)
    return layers.RandomZoom((-0.12, 0.12), fill_mode="reflect", name="aug_zoom")(x)


def _inputs(image_size: int | None, augment: bool, scale: float = 1.0 / 255,
            offset: float = 0.0):
    """The image input (of any size when ``image_size`` is None), augmentation when asked,
    and scaling of 0..255 pixels."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _augmentation(inputs) if augment else inputs
    return inputs, layers.Rescaling(scale, offset=offset, name="scale")(x)


def build_seed_cnn(image_size: int, augment: bool, **_: Any):
    """The original notebook's Sequential-style model: 4 Conv+MaxPool blocks, Flatten, Dense."""
    import keras
    from keras import layers

    if image_size < RECIPES["seed_cnn"].min_image_size:
        raise ModelError("seed_cnn needs an image size of at least 48 pixels")
    inputs, x = _inputs(image_size, augment)
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(512, activation="relu")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="cat_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def _conv_bn(x, filters: int, strides: int = 1, name: str | None = None):
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      name=name and f"{name}_conv")(x)
    # momentum 0.9 (not Keras's 0.99): the moving statistics used at inference settle in
    # tens of steps, so short demo runs validate sensibly instead of at chance level.
    x = layers.BatchNormalization(momentum=0.9, name=name and f"{name}_bn")(x)
    return layers.Activation("relu", name=name and f"{name}_relu")(x)


def build_fast_cnn(image_size: int | None, augment: bool, **_: Any):
    """The default from-scratch net, shaped for a 2-core CPU.

    A stride-2 stem halves the image before any wide convolution (most of a CNN's cost sits
    at full resolution); BatchNorm lets Adam use a high learning rate; global average pooling
    replaces the big Flatten+Dense so the net has few parameters and overfits less.
    """
    import keras
    from keras import layers

    inputs, x = _inputs(image_size, augment)
    x = _conv_bn(x, 24, strides=2, name="stem")
    for i, filters in enumerate((32, 64)):
        x = _conv_bn(x, filters, name=f"block{i + 1}")
        x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    # Width is cheap once the map is small: two convolutions at 1/8 and 1/16 of the image.
    x = _conv_bn(x, 128, name="block3a")
    x = _conv_bn(x, 128, name="block3b")
    x = layers.MaxPooling2D(name="block3_pool")(x)
    x = _conv_bn(x, 256, name="top_a")
    x = _conv_bn(x, 256, name="top_b")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="cat_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="fast_cnn")


def _res_block(x, filters: int, strides: int, name: str):
    """A ResNet basic block: two 3x3 convolutions and a shortcut (1x1 when the shape changes)."""
    from keras import layers

    shortcut = x
    y = _conv_bn(x, filters, strides=strides, name=f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = layers.BatchNormalization(momentum=0.9, name=f"{name}_b_bn")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                 name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_res_cnn(image_size: int | None, augment: bool, **_: Any):
    """The best-from-scratch net: a small ResNet (four stages, 64 to 384 channels).

    The same cheap stride-2 stem as fast_cnn, then one residual block per stage, each stage
    halving the map: the shortcuts let a deeper, wider net train at a high rate.
    """
    import keras
    from keras import layers

    inputs, x = _inputs(image_size, augment)
    x = _conv_bn(x, 32, strides=2, name="stem")
    x = _conv_bn(x, 48, name="stem_b")
    x = layers.MaxPooling2D(name="stem_pool")(x)
    for i, (filters, strides) in enumerate(((64, 1), (128, 2), (256, 2), (384, 2))):
        x = _res_block(x, filters, strides, name=f"stage{i + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="cat_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="res_cnn")


MOBILENET_WEIGHT_SIZES = (96, 128, 160, 192, 224)


def mobilenet_weights_file(image_size: int) -> str:
    """Keras's published name of the ImageNet MobileNetV2 (alpha 1.0, no top) weights file."""
    rows = min(MOBILENET_WEIGHT_SIZES, key=lambda r: abs(r - image_size))
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


def download_mobilenet_weights(image_size: int, options: MlOptions | None = None) -> str:
    """Download (or reuse the cached) ImageNet weights; raise WeightsDownloadError offline.

    ``options`` (the defaults when None, ``ml.options``): ``weights_base_url`` points at a
    mirror, ``weights_dir`` at the cache folder.
    """
    import keras

    options = options or MlOptions()
    fname = mobilenet_weights_file(image_size)
    url = options.weights_base_url.rstrip("/") + "/" + fname
    cache_dir = options.weights_dir or None
    if cache_dir:
        # Keras silently falls back to /tmp/.keras when the folder does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    try:
        return keras.utils.get_file(fname, url, cache_subdir="models", cache_dir=cache_dir)
    except Exception as exc:  # get_file wraps every network error in a plain Exception
        raise WeightsDownloadError(
            f"could not download the ImageNet weights for mobilenet_v2 from {url} "
            f"(is this machine offline?); choose a from-scratch recipe such as fast_cnn, "
            f"or copy {fname} into the weights folder"
        ) from exc


def build_mobilenet_v2(image_size: int, augment: bool, pretrained: bool = True,
                       options: MlOptions | None = None, **_: Any):
    """Transfer learning: a frozen ImageNet MobileNetV2 with a new sigmoid head (its
    weights downloaded as ``options`` say, the defaults when None).

    The base is built on our own input tensor so the model stays one flat graph: Grad-CAM
    can then reach the base's last convolution directly.
    """
    import keras
    from keras import layers

    if image_size < 32:
        raise ModelError("mobilenet_v2 needs an image size of at least 32 pixels")
    weights_path = download_mobilenet_weights(image_size, options) if pretrained else None
    inputs, x = _inputs(image_size, augment, 1.0 / 127.5, -1.0)  # MobileNet wants [-1, 1]
    base = keras.applications.MobileNetV2(
        input_tensor=x, input_shape=(image_size, image_size, 3), include_top=False, weights=None
    )
    if weights_path:
        # Load into a stand-alone copy (the layout the file was saved from), then copy layer
        # by layer by Keras's own names: our base also holds our input and scaling layers.
        try:
            donor = keras.applications.MobileNetV2(
                input_shape=(image_size, image_size, 3), include_top=False, weights=weights_path)
        except Exception as exc:
            raise ModelError(f"the weights file {weights_path} is damaged or not MobileNetV2 "
                             f"weights ({type(exc).__name__}); delete it to download it again"
                             ) from exc
        for layer in donor.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
    for layer in base.layers:
        layer.trainable = False
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="cat_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("fast_cnn", "the default: a small BatchNorm CNN, about 40 min on a 2-core CPU "
               "(see Benchmarks for its accuracy)", 128, 2e-3, build_fast_cnn, any_size=True),
        # The same net at 96 px with a one-cycle schedule: measured in bench/accuracy.py.
        Recipe("sprint_cnn", "10-minute sprint on 2 CPU cores with bfloat16: the fast_cnn net at "
               "96 px with a one-cycle schedule (see Benchmarks for its accuracy)",
               96, 4e-3, build_fast_cnn, epochs=12, schedule="one_cycle", label_smoothing=0.1,
               any_size=True),
        # fast_cnn again, its first epochs on 64 px photos: measured in bench/accuracy.py.
        Recipe("flash_cnn", "5-minute demo on 2 CPU cores with bfloat16: sprint_cnn's net and "
               "schedule, its first 8 epochs on small 64 px photos (see Benchmarks for its "
               "accuracy)",
               96, 4e-3, build_fast_cnn, epochs=12, schedule="one_cycle", label_smoothing=0.1,
               small_image_size=64, small_epochs=8, any_size=True),
        # 160 px and 42 epochs: the best held-out figure from scratch (docs/BENCHMARKS.md).
        Recipe("res_cnn", "best from scratch: a small ResNet at 160 px for long runs, about 2.3 h "
               "on a 2-core CPU: leave it in the background (see Benchmarks for its accuracy)", 160,
               3e-3, build_res_cnn, epochs=42, schedule="one_cycle", label_smoothing=0.1,
               any_size=True),
        Recipe("seed_cnn", "the original notebook's CNN: 4 conv blocks, Flatten, Dense",
               128, 1e-3, build_seed_cnn, min_image_size=48),
        Recipe("mobilenet_v2", "transfer learning from ImageNet (downloads weights; "
               "needs internet the first time)", 160, 1e-3, build_mobilenet_v2),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe of that name; ModelError naming the choices otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ModelError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


# (log name, true label, predicted label): label 1 is cat, so a "positive" is a cat.
CONFUSION_CELLS = (("cm_dog_dog", 0, 0), ("cm_dog_cat", 0, 1), ("cm_cat_dog", 1, 0),
                   ("cm_cat_cat", 1, 1))


def confusion_metrics() -> list[Any]:
    """Keras metrics counting each cell of the confusion matrix at the 0.5 threshold.

    Four sums of a comparison per batch: Keras's own TruePositives & co. run their general
    threshold machinery on every training step, which cost the default recipe's epoch
    several per cent (bench/panel_cost.py).
    """
    import keras
    from keras import ops

    class ConfusionCell(keras.metrics.Metric):
        def __init__(self, truth: int, guess: int, name: str, **kwargs: Any):
            super().__init__(name=name, **kwargs)
            self.truth, self.guess = truth, guess
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, y_true, y_pred, sample_weight=None):
            truth = ops.reshape(ops.cast(y_true, "float32") >= 0.5, (-1,))
            guess = ops.reshape(ops.cast(y_pred, "float32") >= 0.5, (-1,))
            hit = ops.logical_and(ops.equal(truth, bool(self.truth)),
                                  ops.equal(guess, bool(self.guess)))
            self.count.assign_add(ops.sum(ops.cast(hit, "float32")))

        def result(self):
            return self.count

        def get_config(self):
            return {**super().get_config(), "truth": self.truth, "guess": self.guess}

    return [ConfusionCell(truth, guess, name) for name, truth, guess in CONFUSION_CELLS]


def confusion_from_logs(logs: dict[str, Any], prefix: str = "val_") -> list[list[int]] | None:
    """[[dog→dog, dog→cat], [cat→dog, cat→cat]] from Keras's logs, None if not there."""
    cells = {(truth, guess): logs.get(prefix + name) for name, truth, guess in CONFUSION_CELLS}
    if any(v is None for v in cells.values()):
        return None
    return [[int(round(float(cells[(t, g)]))) for g in (0, 1)] for t in (0, 1)]


def build_model(name: str, image_size: int, augment: bool = True,
                learning_rate: Any = 1e-3, label_smoothing: float = 0.0,
                weight_decay: float = 0.0, any_size: bool = False, **kwargs: Any):
    """Build and compile a recipe's model (binary cross-entropy, Adam or AdamW, accuracy).

    With ``any_size`` (recipes that allow it) the model takes photos of any size, as
    progressive resizing trains it; its training state is still built at ``image_size``.

    ``learning_rate`` is a number or a Keras learning-rate schedule. A ``weight_decay``
    above 0 makes it AdamW: each step shrinks the weights by ``lr * weight_decay``, apart
    from the gradient (BatchNorm and biases are left alone).
    """
    import keras

    recipe = get_recipe(name)
    if any_size and not recipe.any_size:
        raise ModelError(f"{name} takes one image size only")
    model = recipe.build(None if any_size else image_size, augment, **kwargs)
    if weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        # The confusion counts ride on the validation pass each epoch already makes.
        metrics=["accuracy", *confusion_metrics()],
    )
    build_training_state(model, image_size)
    return model


def build_training_state(model: Any, image_size: int) -> None:
    """Create the optimizer's, loss's and metrics' variables now, before ``fit``.

    Left to ``fit``, Keras creates them while tracing the first training step, and
    TensorFlow then traces that step a second time: on 2 cores that doubled the wait for a
    run's first batch (3.6 s of tracing against 1.5 s, ``fast_cnn`` at 64 px). Keras does
    this itself only under a distribution strategy, through the same method.
    """
    import numpy as np

    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None:  # another Keras: fit builds it, only slower
        log.info("this Keras builds a model's training state in fit; the first step is slower")
        return
    images = np.zeros((1, image_size, image_size, 3), "uint8")
    symbolic_build(data_batch=(images, np.zeros((1,), "float32")))
