"""Train tab: a form for every hyper-parameter; submitting queues a run and opens its page."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from core.run_service import QueueDown
from core.store import StoreBusy
from dashboard import access
from dashboard.filters import learning_rate
from dashboard.helpers import STORE_RETRY_AFTER_S, sentence
from dashboard.launching import REDIS_DOWN, launch
from ml.config import BOUNDS, CHOICES, RECIPE_DEFAULTS, TrainConfig, parse_config
from ml.errors import ConfigError
from ml.recipes import RECIPES

bp = Blueprint("train", __name__)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    hint: str  # in plain words, for someone training their first model
    step: str = "1"
    blank: str = ""  # what an empty box means, for optional fields
    choices: dict[str, str] | None = None  # a drop-down of value -> description
    details: str = ""  # the same in the trade's words, on a small line under the hint


FIELDS = (
    Field("epochs", "Epochs", "How many times the model goes through all the training photos. "
          "It may stop sooner once it stops getting better.", blank="the recipe's",
          details="With the reduce-on-plateau schedule, early stopping may end the run "
          "before the last epoch."),
    Field("image_size", "Image size (px)", "Photos are shrunk to squares this wide: bigger "
          "shows more detail but trains slower.", blank="the recipe's size"),
    Field("batch_size", "Batch size", "How many photos the model looks at before each small "
          "step of learning."),
    Field("learning_rate", "Learning rate", "How big each step of learning is: too big and "
          "it jumps about, too small and it learns slowly.", step="any",
          blank="the recipe's rate", details="Adam's starting step size."),
    Field("limit", "Photos used", "Use only this many photos, half cats and half dogs, for a "
          "quick demo. Leave it empty to use all the photos.", blank="all photos",
          details="A stratified sample of the dataset."),
    Field("schedule", "Learning-rate schedule", "How the size of the steps changes while "
          "the model trains.",
          choices=CHOICES["schedule"],
          details="Reduce-on-plateau halves the rate when validation loss stalls. Cosine and "
          "one-cycle (warm up over the first quarter) are planned for all the epochs: no "
          "early stopping."),
    Field("label_smoothing", "Label smoothing", "Teaches the model never to be completely "
          "sure, which often makes it better on new photos.", step="0.01",
          blank="the recipe's",
          details="Trains towards 0.05/0.95 instead of 0/1 (at 0.1): a less over-confident "
          "model."),
    Field("weight_decay", "Weight decay", "A brake on learning the training photos by heart; "
          "0 turns it off.", step="0.01", blank="the recipe's",
          details="Above 0, AdamW shrinks the weights a little every step; 0.05 did not help "
          "res_cnn, so no recipe uses it."),
    Field("small_image_size", "Small images first (px)", "Train the first epochs on "
          "smaller photos, which is quicker, then finish at the full image size.",
          blank="off: the full size throughout",
          details="Progressive resizing; needs a cosine or one-cycle schedule and a recipe "
          "that takes any size (not seed_cnn or mobilenet_v2)."),
    Field("small_epochs", "Epochs on small images", "How many of the epochs use the small "
          "photos.", blank="the recipe's"),
    Field("precision", "Precision", "How exact the sums are while training. Auto picks the "
          "fastest that is safe on this computer.",
          choices=CHOICES["precision"],
          details="Auto picks bfloat16 on CPUs that do it natively (up to 2x faster) and "
          "float16 on GPUs with tensor cores; the saved model is float32 either way."),
    Field("val_split", "Validation share", "The share of photos kept back to test the model on "
          "photos it never learns from.", step="0.01",
          details="Held out each run; the epoch that scores best on them is kept."),
    Field("early_stopping_patience", "Early-stopping patience",
          "Stop after this many epochs in a row without a better score on the validation "
          "photos."),
    Field("lr_factor", "LR reduction factor", "How much smaller the steps get when learning "
          "stalls (0.5 halves them).", step="0.01",
          details="The learning rate is multiplied by this on a plateau."),
    Field("lr_patience", "LR patience", "How many epochs without improvement before the "
          "steps get smaller.",
          details="Epochs without a lower validation loss before reducing the learning rate."),
    Field("seed", "Seed", "The same seed gives the same photos for validation and the same "
          "start, so two runs can be compared fairly."),
)
OPTIONAL = {"image_size", "learning_rate", "limit", "small_image_size"}
INTS = {f.name for f in fields(TrainConfig) if BOUNDS.get(f.name, (None,))[0] is int}


def _form_to_config(form) -> tuple[dict[str, Any], dict[str, str]]:
    """The submitted form as a config dict, plus errors for boxes that are not numbers."""
    data: dict[str, Any] = {"recipe": form.get("recipe", ""), "augment": "augment" in form}
    errors: dict[str, str] = {}
    for field in FIELDS:
        raw = (form.get(field.name) or "").strip()
        if raw == "":
            if field.name in OPTIONAL:
                data[field.name] = None
            elif field.name not in RECIPE_DEFAULTS and field.choices is None:
                errors[field.name] = "enter a value"
            # else left out: the recipe's own value (or the default choice)
            continue
        if field.choices is not None:
            data[field.name] = raw  # parse_config names the choices if it is not one
            continue
        try:
            value = float(raw)
        except ValueError:
            errors[field.name] = f"must be a number, got {raw!r}"
            continue
        if not math.isfinite(value):  # float() takes "inf" and "nan"
            errors[field.name] = f"must be a number, got {raw!r}"
            continue
        data[field.name] = int(value) if field.name in INTS and value.is_integer() else value
    return data, errors


def blank_text(field: Field, recipe_name: str | None) -> str:
    """What an empty box means, with the recipe's number where the recipe has one
    ("the recipe's rate: 0.001"), so the form never hides what it will use."""
    recipe = RECIPES.get(recipe_name or "")
    if recipe is not None and field.name == "learning_rate":
        return f"{field.blank}: {learning_rate({'recipe': recipe.name})}"
    if recipe is not None and field.name == "image_size":
        return f"{field.blank}: {recipe.image_size} px"
    return field.blank


def _render(values: dict[str, Any], errors: dict[str, str] | None = None,
            notice: str | None = None, status: int = 200):
    recipe_name = values.get("recipe")
    return render_template("train.html", tab="train", fields=FIELDS, bounds=BOUNDS,
                           blank_text=lambda field: blank_text(field, recipe_name),
                           recipes=RECIPES.values(), values=values, errors=errors or {},
                           notice=notice, recipe_defaults=RECIPE_DEFAULTS,
                           your_name=access.display_name()), status


@bp.get("/train")
def index():
    return _render(TrainConfig().to_dict())


@bp.post("/train")
def submit():
    if "name" in request.form:
        access.set_display_name(request.form.get("name"))
    data, errors = _form_to_config(request.form)
    typed = {**{k: v for k, v in request.form.items() if k != "passcode"},
             "augment": data["augment"]}
    try:
        config = parse_config({k: v for k, v in data.items() if k not in errors})
    except ConfigError as exc:
        errors = {**exc.fields, **errors}
    if errors:
        # What was typed stays in the boxes. Status 200, not 422: browsers log a failed
        # page load as a console error, and this page is an answer, not a failure.
        return _render(typed, errors, "Some settings need fixing: see the marked boxes.")
    try:
        run = launch(config)
    except access.Denied as exc:
        if exc.status in (401, 403):
            return _render(typed, {"passcode": "enter the lab passcode" if exc.status == 401
                                   else "that is not the lab passcode"},
                           "Starting a run needs the lab passcode.")
        return _render(typed, notice=sentence(exc.message))
    except QueueDown:
        return _render(data, notice=sentence(REDIS_DOWN), status=503)
    except StoreBusy as exc:  # nothing was stored: what was typed stays, to send again
        body, status = _render(typed, notice=sentence(str(exc)), status=503)
        return body, status, {"Retry-After": str(STORE_RETRY_AFTER_S)}
    return redirect(url_for("runs.detail", run_id=run["id"]))
