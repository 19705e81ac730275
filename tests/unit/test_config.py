"""Run config validation: defaults, bounds, unknown keys, every bad field named at once."""

from __future__ import annotations

import pytest

from ml.config import TrainConfig, parse_config
from ml.errors import ConfigError


def test_empty_config_gets_defaults():
    cfg = parse_config({})
    assert cfg == TrainConfig()
    assert cfg.recipe == "fast_cnn" and cfg.epochs > 0 and 0 < cfg.val_split < 1


def test_valid_values_are_kept_and_whole_floats_become_ints():
    cfg = parse_config({"recipe": "seed_cnn", "epochs": 3.0, "learning_rate": 1e-4,
                        "augment": False, "limit": 100})
    assert (cfg.recipe, cfg.epochs, cfg.learning_rate, cfg.augment, cfg.limit) == (
        "seed_cnn", 3, 1e-4, False, 100)
    assert isinstance(cfg.epochs, int)


def test_every_bad_field_is_named():
    with pytest.raises(ConfigError) as info:
        parse_config({"learning_rate": -0.1, "epochs": 0, "batch_size": 2.5,
                      "recipe": "resnet9000", "augment": "yes", "colour": "red",
                      "val_split": float("nan")})
    fields = info.value.fields
    assert set(fields) == {"learning_rate", "epochs", "batch_size", "recipe", "augment",
                           "colour", "val_split"}
    assert "at least" in fields["learning_rate"]
    assert "whole number" in fields["batch_size"]
    assert "fast_cnn" in fields["recipe"]  # names the choices
    assert fields["colour"] == "unknown setting"


def test_strings_and_booleans_are_not_numbers():
    with pytest.raises(ConfigError) as info:
        parse_config({"epochs": "10", "batch_size": True})
    assert set(info.value.fields) == {"epochs", "batch_size"}


def test_image_size_below_the_recipes_minimum_is_refused_up_front():
    with pytest.raises(ConfigError) as info:
        parse_config({"recipe": "seed_cnn", "image_size": 40})
    assert "48" in info.value.fields["image_size"]
    assert parse_config({"recipe": "fast_cnn", "image_size": 40}).image_size == 40


def test_recipe_supplies_epochs_schedule_and_smoothing_unless_given():
    from ml.recipes import RECIPES

    for recipe in RECIPES.values():
        cfg = parse_config({"recipe": recipe.name})
        assert (cfg.epochs, cfg.schedule, cfg.label_smoothing, cfg.weight_decay) == (
            recipe.epochs, recipe.schedule, recipe.label_smoothing, recipe.weight_decay)
    assert len({(r.epochs, r.schedule) for r in RECIPES.values()}) > 1  # they really differ
    sprint = next(r for r in RECIPES.values() if r.schedule != "plateau")
    cfg = parse_config({"recipe": sprint.name, "epochs": 3, "schedule": "plateau",
                        "label_smoothing": 0.0})
    assert (cfg.epochs, cfg.schedule, cfg.label_smoothing) == (3, "plateau", 0.0)


def test_schedule_precision_and_smoothing_are_checked():
    with pytest.raises(ConfigError) as info:
        parse_config({"schedule": "linear", "precision": "float8", "label_smoothing": 0.5,
                      "weight_decay": -0.01})
    fields = info.value.fields
    assert "one_cycle" in fields["schedule"] and "bfloat16" in fields["precision"]
    assert "at most 0.4" in fields["label_smoothing"]
    assert "at least 0" in fields["weight_decay"]
    cfg = parse_config({"schedule": "cosine", "precision": "float32", "label_smoothing": 0.1,
                        "weight_decay": 0.05})
    assert (cfg.schedule, cfg.precision, cfg.label_smoothing, cfg.weight_decay) == (
        "cosine", "float32", 0.1, 0.05)


def test_progressive_resizing_settings_are_checked_together():
    cfg = parse_config({"recipe": "flash_cnn"})
    assert (cfg.small_image_size, cfg.small_epochs) == (64, 8)
    # the recipe's own progressive resizing fits the person's choices, or is turned off
    assert parse_config({"recipe": "flash_cnn", "epochs": 4}).small_epochs == 2
    for chosen in ({"schedule": "plateau"}, {"image_size": 64}, {"epochs": 1}):
        cfg = parse_config({"recipe": "flash_cnn", **chosen})
        assert (cfg.small_image_size, cfg.small_epochs) == (None, 0), chosen
    assert parse_config({"recipe": "fast_cnn"}).small_image_size is None
    # settings the person chose that do not fit are named
    bad = [({"recipe": "seed_cnn", "small_image_size": 64, "small_epochs": 2,
             "schedule": "cosine"}, "small_image_size", "one image size"),
           ({"recipe": "flash_cnn", "small_image_size": 96}, "small_image_size", "smaller"),
           ({"recipe": "fast_cnn", "small_image_size": 64, "small_epochs": 2},
            "small_image_size", "fixed schedule"),
           ({"recipe": "flash_cnn", "small_epochs": 12}, "small_epochs", "between 1 and 11"),
           ({"recipe": "fast_cnn", "small_epochs": 3}, "small_epochs", "set both"),
           # the recipe's small size is off for this image size, and they asked for it
           ({"recipe": "flash_cnn", "image_size": 64, "small_epochs": 5}, "small_epochs",
            "small images (64 px) cannot be used here: the small image size must be smaller "
            "than the image size (64 px)")]
    for config, field, words in bad:
        with pytest.raises(ConfigError) as info:
            parse_config(config)
        assert words in info.value.fields[field], (config, info.value.fields)
    cfg = parse_config({"recipe": "sprint_cnn", "small_image_size": 48, "small_epochs": 4})
    assert (cfg.small_image_size, cfg.small_epochs, cfg.epochs) == (48, 4, 12)
    with pytest.raises(ConfigError) as info:  # the form sends an untouched 0
        parse_config({"recipe": "sprint_cnn", "small_image_size": 64, "small_epochs": 0})
    assert "at least 1" in info.value.fields["small_epochs"]
