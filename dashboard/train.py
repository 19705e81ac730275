"""Train tab: a form for every hyper-parameter; submitting queues a run and opens its page."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from core.runs import QueueDown
from dashboard import access
from dashboard.api import REDIS_DOWN, launch
from dashboard.helpers import sentence
from ml.config import BOUNDS, CHOICES, RECIPE_DEFAULTS, TrainConfig, parse_config
from ml.errors import ConfigError
from ml.recipes import RECIPES

bp = Blueprint("train", __name__)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    hint: str
    step: str = "1"
    blank: str = ""  # what an empty box means, for optional fields
    choices: dict[str, str] | None = None  # a drop-down of value -> description


FIELDS = (
    Field("epochs", "Epochs", "Passes over the training photos; with reduce-on-plateau, "
          "early stopping may end sooner.", blank="the recipe's"),
    Field("image_size", "Image size (px)", "Photos are resized to a square of this side.",
          blank="the recipe's size"),
    Field("batch_size", "Batch size", "Photos per training step."),
    Field("learning_rate", "Learning rate", "Adam's starting step size.", step="any",
          blank="the recipe's rate"),
    Field("limit", "Photos used", "A stratified sample for quick demos.", blank="all photos"),
    Field("schedule", "Learning-rate schedule", "Reduce-on-plateau halves the rate when "
          "validation loss stalls. Cosine and one-cycle (warm up over the first quarter) are "
          "planned for all the epochs: no early stopping.",
          choices=CHOICES["schedule"]),
    Field("label_smoothing", "Label smoothing", "Trains towards 0.05/0.95 instead of 0/1 "
          "(at 0.1): a less over-confident model.", step="0.01", blank="the recipe's"),
    Field("weight_decay", "Weight decay", "Above 0, AdamW shrinks the weights a little every "
          "step, a brake on over-fitting; 0.05 did not help res_cnn, so no recipe uses it.",
          step="0.01", blank="the recipe's"),
    Field("precision", "Precision", "Auto picks bfloat16 on CPUs that do it natively (up to "
          "2x faster) and float16 on GPUs with tensor cores; the saved model is float32 "
          "either way.",
          choices=CHOICES["precision"]),
    Field("val_split", "Validation share", "Held out each run to pick the best epoch.",
          step="0.01"),
    Field("early_stopping_patience", "Early-stopping patience",
          "Epochs without a better validation accuracy before stopping."),
    Field("lr_factor", "LR reduction factor", "The learning rate is multiplied by this on a "
          "plateau.", step="0.01"),
    Field("lr_patience", "LR patience", "Epochs without a lower validation loss before "
          "reducing the learning rate."),
    Field("seed", "Seed", "Same seed, same split and same start."),
)
OPTIONAL = {"image_size", "learning_rate", "limit"}
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
        data[field.name] = int(value) if field.name in INTS and value.is_integer() else value
    return data, errors


def _render(values: dict[str, Any], errors: dict[str, str] | None = None,
            notice: str | None = None, status: int = 200):
    return render_template("train.html", tab="train", fields=FIELDS, bounds=BOUNDS,
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
    return redirect(url_for("runs.detail", run_id=run["id"]))
