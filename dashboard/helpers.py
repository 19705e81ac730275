"""Small request helpers every blueprint shares: settings, the run service, errors, arguments."""

from __future__ import annotations

from typing import Any

from flask import Request, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

NOT_JSON = "the request body is not valid JSON (or it is nested too deeply to read)"
# Seconds a caller is told to wait before trying a write again when the run store is busy.
STORE_RETRY_AFTER_S = 5


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


class LabRequest(Request):
    """Flask's request, whose JSON body, when it cannot be read, is a 400 with a sentence.

    Flask answers a bare 400 for bad JSON, and lets the RecursionError of a body nested
    thousands deep through (a 500): both are the caller's mistake, so both say so here.
    """

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:  # not sent as JSON at all: Flask's 415 says so
            return super().on_json_loading_failed(e)
        raise BadRequest(NOT_JSON)

    def get_json(self, force: bool = False, silent: bool = False,
                 cache: bool = True) -> Any | None:
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            if silent:
                return None
            raise BadRequest(NOT_JSON) from None


def json_body() -> Any | None:
    """The request's JSON body: ``{}`` when it is empty, None when it is not sent as JSON
    (the caller says what it wants instead). A body that cannot be read (bad JSON, nested
    too deeply) raises BadRequest with a sentence; one over MAX_CONTENT_LENGTH, a 413."""
    if not request.is_json:
        return None if request.content_length else {}
    return request.get_json() if request.get_data(cache=True).strip() else {}


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
