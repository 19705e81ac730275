"""Training run config: one JSON object whose keys are the CLI's long options with underscores.

Every key is optional with a sensible default; unknown keys and values out of bounds are
reported together (``ConfigError.fields``) so an API can answer 422 naming every bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ml.errors import ConfigError

DEFAULT_RECIPE = "fast_cnn"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    recipe: str = DEFAULT_RECIPE
    epochs: int = 20
    image_size: int | None = None  # None: the recipe's own default
    batch_size: int = 64
    learning_rate: float | None = None  # None: the recipe's own default
    augment: bool = True
    val_split: float = 0.15
    early_stopping_patience: int = 5
    lr_factor: float = 0.5
    lr_patience: int = 2
    limit: int | None = None  # photos used (stratified sample), for quick demos
    seed: int = 42
    schedule: str = "plateau"  # see SCHEDULES
    label_smoothing: float = 0.0
    weight_decay: float = 0.0  # decoupled (AdamW) when above 0; plain Adam at 0
    precision: str = "auto"  # see PRECISIONS
    # Progressive resizing: the first `small_epochs` epochs train on photos of
    # `small_image_size` px (cheaper), the rest at the full size. None: full size throughout.
    small_image_size: int | None = None
    small_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (JSON-serialisable)."""
        return asdict(self)


# How the learning rate moves. "plateau" halves it when validation loss stalls (and early
# stopping may end the run); the fixed schedules are planned for exactly `epochs` epochs,
# so the run always goes the full length.
SCHEDULES = {  # value -> the label a person picks it by
    "plateau": "reduce on plateau",
    "cosine": "cosine decay",
    "one_cycle": "one-cycle (warm-up, then cosine)",
}
PRECISIONS = {
    "auto": "auto",
    "float32": "float32",
    "bfloat16": "bfloat16 (mixed)",
    "float16": "float16 (mixed, for GPUs with tensor cores)",
}
# Settings a recipe supplies when the caller leaves them out (see ml.recipes.Recipe).
RECIPE_DEFAULTS = ("epochs", "schedule", "label_smoothing", "weight_decay", "small_image_size",
                   "small_epochs")
# Settings a config may leave blank (None) for its recipe's own: the stored config keeps the
# blank (the run followed its recipe), and ``effective`` fills it wherever it is used.
RECIPE_FILLED = ("image_size", "learning_rate")


def effective(config: TrainConfig | Mapping[str, Any], name: str) -> Any:
    """The value a run uses for ``name`` (one of RECIPE_FILLED): the config's own, else its
    recipe's; None for a stored config whose recipe is unknown.

    The one place these blanks are filled: training, the form's checks and the pages agree.
    """
    if name not in RECIPE_FILLED:
        raise ValueError(f"{name!r} is not filled from the recipe: one of {RECIPE_FILLED}")
    from ml.recipes import RECIPES  # late import, as in parse_config

    def get(key: str) -> Any:
        return getattr(config, key) if isinstance(config, TrainConfig) else config.get(key)

    recipe = RECIPES.get(get("recipe"))
    return get(name) or (getattr(recipe, name) if recipe else None)


# (type, min, max); None bounds are open. Integers must be integers, not 3.5.
BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "epochs": (int, 1, 500),
    "image_size": (int, 32, 512),
    "batch_size": (int, 1, 1024),
    "learning_rate": (float, 1e-7, 1.0),
    "val_split": (float, 0.05, 0.5),
    "early_stopping_patience": (int, 0, 100),
    "lr_factor": (float, 0.01, 0.99),
    "lr_patience": (int, 0, 100),
    "limit": (int, 4, 10_000_000),
    "seed": (int, 0, 2**31 - 1),
    "label_smoothing": (float, 0.0, 0.4),
    "weight_decay": (float, 0.0, 0.5),
    "small_image_size": (int, 32, 512),
    "small_epochs": (int, 0, 499),
}
CHOICES: dict[str, dict[str, str]] = {"schedule": SCHEDULES, "precision": PRECISIONS}


def _check_number(value: Any, kind: type, lo: float | None, hi: float | None):
    """Return (value, None) or (None, message)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"must be a number, got {value!r}"
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            return None, f"must be a whole number, got {value!r}"
        value = int(value)
    else:
        value = float(value)
        if value != value:  # NaN
            return None, "must be a number, got NaN"
    if lo is not None and value < lo:
        return None, f"must be at least {lo:g}, got {value:g}"
    if hi is not None and value > hi:
        return None, f"must be at most {hi:g}, got {value:g}"
    return value, None


def parse_config(data: dict[str, Any] | None) -> TrainConfig:
    """Validate a config dict and fill in defaults; raises ConfigError naming every bad field.

    Epochs, schedule, label smoothing and weight decay left out come from the chosen recipe.
    """
    from ml.recipes import RECIPES  # late import: recipes pulls in nothing heavy at import time

    data = dict(data or {})
    known = {f.name for f in fields(TrainConfig)}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            errors[key] = "unknown setting"
            continue
        if value is None and key in ("image_size", "learning_rate", "limit", "small_image_size"):
            values[key] = None
            continue
        if key == "recipe":
            if value not in RECIPES:
                errors[key] = f"unknown recipe {value!r}; choose one of {', '.join(RECIPES)}"
            else:
                values[key] = value
        elif key in CHOICES:
            if value not in CHOICES[key]:
                errors[key] = f"unknown {key} {value!r}; choose one of {', '.join(CHOICES[key])}"
            else:
                values[key] = value
        elif key == "augment":
            if not isinstance(value, bool):
                errors[key] = f"must be true or false, got {value!r}"
            else:
                values[key] = value
        else:
            kind, lo, hi = BOUNDS[key]
            checked, problem = _check_number(value, kind, lo, hi)
            if problem:
                errors[key] = problem
            else:
                values[key] = checked
    recipe = RECIPES.get(values.get("recipe", DEFAULT_RECIPE))
    size = values.get("image_size")
    if recipe and size is not None and size < recipe.min_image_size and "image_size" not in errors:
        errors["image_size"] = (f"{recipe.name} needs at least {recipe.min_image_size} pixels, "
                                f"got {size}")
    if errors:
        raise ConfigError(errors)
    given = set(values)
    if recipe:
        for key in RECIPE_DEFAULTS:
            values.setdefault(key, getattr(recipe, key))
    _check_small_images(values, given, recipe, errors)
    if errors:
        raise ConfigError(errors)
    return TrainConfig(**values)


def _check_small_images(values: dict[str, Any], given: set[str], recipe: Any,
                        errors: dict[str, str]) -> None:
    """Progressive resizing's two settings against each other, the epochs and the recipe.

    A recipe's own progressive resizing that no longer fits what the person chose (fewer
    epochs, a smaller image size, reduce on plateau) is fitted to it or turned off: it was
    not their choice. Settings they chose that do not fit are errors.
    """
    small = values.get("small_image_size")
    epochs = values.get("epochs", TrainConfig.epochs)
    small_epochs = values.get("small_epochs", 0)
    if small is None:
        values["small_epochs"] = 0
        if small_epochs and "small_epochs" in given:
            errors["small_epochs"] = "needs a small image size: set both, or neither"
        return
    full = effective({"recipe": DEFAULT_RECIPE, **values}, "image_size")
    problem = None
    if recipe is not None and not recipe.any_size:
        problem = (f"{recipe.name} takes one image size only; progressive resizing needs a "
                   "recipe that takes any size")
    elif recipe is not None and small < recipe.min_image_size:
        problem = f"{recipe.name} needs at least {recipe.min_image_size} pixels, got {small}"
    elif full is not None and small >= full:
        problem = f"must be smaller than the image size ({full} px)"
    elif values.get("schedule", TrainConfig.schedule) == "plateau":
        problem = ("needs a fixed schedule (cosine or one-cycle): reduce on plateau may stop "
                   "the run before the full-size epochs")
    if "small_epochs" not in given and small_epochs >= epochs:
        small_epochs = values["small_epochs"] = epochs // 2
    if problem is not None or small_epochs == 0:
        if "small_image_size" in given:
            if problem is not None:
                errors["small_image_size"] = problem
            else:
                errors["small_epochs"] = "must be at least 1 to train on small images first"
            return
        if problem is not None and small_epochs and "small_epochs" in given:
            # They asked for small epochs, of the recipe's size: say why there can be none.
            errors["small_epochs"] = (f"the recipe's small images ({small} px) cannot be used "
                                      f"here: the small image size {problem}; set one that "
                                      "fits, or 0 epochs")
            return
        values["small_image_size"], values["small_epochs"] = None, 0  # the recipe's: off
        return
    if not 1 <= small_epochs < epochs:
        errors["small_epochs"] = (f"must be between 1 and {epochs - 1} (fewer than the "
                                  f"{epochs} epochs), got {small_epochs}")
