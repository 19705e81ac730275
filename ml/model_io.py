"""Loading a saved model and its JSON card."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.errors import ModelError

MODEL_FILE = "model.keras"  # the trained model, scaling and augmentation inside it
CARD_FILE = "card.json"  # what the model is: recipe, image size, classes, metrics, history


@dataclass(eq=False)  # identity: a loaded model keys caches (ml.predict)
class LoadedModel:
    """A Keras model with the card written beside it at training time."""

    model: Any
    card: dict[str, Any]
    path: Path

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])


def read_card(model_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card beside a model file (or in a model folder); a minimal one if it is missing."""
    path = Path(model_path)
    card_path = (path if path.is_dir() else path.parent) / CARD_FILE
    if card_path.is_file():
        try:
            return json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"the model card {card_path} is unreadable: {exc}") from exc
    return {}


def load_model(model_path: str | os.PathLike[str]) -> LoadedModel:
    """Load ``model.keras`` (or a folder holding it); ModelError with one sentence otherwise."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    card = read_card(path)
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load the model {path}: it is not a readable .keras file "
                         f"({type(exc).__name__})") from exc
    shape = model.input_shape
    if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or shape[1] is None:
        raise ModelError(f"model {path} does not take square RGB images (input {shape})")
    card.setdefault("image_size", int(shape[1]))
    card.setdefault("class_names", ["dog", "cat"])
    return LoadedModel(model=model, card=card, path=path)
