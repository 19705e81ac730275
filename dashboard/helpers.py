"""Small request helpers every blueprint shares: settings, the run service, errors, arguments."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request


def lab_settings():
    """This web process's :class:`core.settings.Settings`."""
    return current_app.config["LAB_SETTINGS"]


def run_service():
    """This web process's :class:`core.run_service.RunService`."""
    return current_app.extensions["lab_runs"]


def sentence(message: str) -> str:
    """A message as a sentence for a page: capital first letter, one full stop."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def json_error(status: int, message: str, **extra: Any):
    """The API's error answer: ``{"error": "one sentence", ...}`` with the status."""
    return jsonify({"error": message, **extra}), status


class BadArgument(ValueError):
    """A query argument that is not what the route accepts; the message names it."""


def int_arg(name: str, default: int, low: int, high: int, *, lenient: bool = False) -> int:
    """A whole-number query argument between ``low`` and ``high``.

    Strict (the API): anything else raises :class:`BadArgument`. ``lenient`` (pages, whose
    URLs people edit): a non-number means the default and an out-of-range value is clamped.
    """
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        if lenient:
            return default
        raise BadArgument(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if lenient:
        return min(max(value, low), high)
    if not low <= value <= high:
        raise BadArgument(f"{name} must be between {low} and {high}, got {value}")
    return value
