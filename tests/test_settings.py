"""Settings from the environment: defaults, the lab passcode and the per-address cap."""

from __future__ import annotations

import pytest

from core.settings import load_settings


def test_defaults_are_an_open_lab_with_caps_per_student_not_per_address():
    settings = load_settings({})
    assert settings.passcode is None and settings.max_active_per_client == 0
    assert (settings.max_runs_per_student, settings.max_queued) == (2, 60)
    assert settings.lock_launch is False
    assert settings.trusted_proxies == 0 and settings.secret_key is None
    assert settings.allowed_origins == () and settings.session_cookie == "lab_session_5000"


def test_passcode_cap_and_proxy_are_read():
    settings = load_settings({"LAB_PASSCODE": "tabby", "LAB_MAX_QUEUED_PER_CLIENT": "0",
                              "LAB_TRUSTED_PROXIES": "2", "LAB_SECRET_KEY": "k",
                              "LAB_ALLOWED_ORIGINS": "https://lab.school.example/, http://x:1",
                              "LAB_PORT": "5301"})
    assert (settings.passcode, settings.max_active_per_client) == ("tabby", 0)
    assert settings.trusted_proxies == 2 and settings.secret_key == "k"
    assert settings.allowed_origins == ("https://lab.school.example", "http://x:1")
    assert settings.session_cookie == "lab_session_5301"  # side-by-side labs differ
    # The older on/off switch still means one proxy; a cookie name can be given.
    older = load_settings({"LAB_TRUST_PROXY": "yes", "LAB_SESSION_COOKIE": "room_b"})
    assert older.trusted_proxies == 1 and older.session_cookie == "room_b"
    # A passcode set by hand locks launching unless LAB_LOCK_LAUNCH says otherwise.
    assert settings.lock_launch is True
    assert load_settings({"LAB_PASSCODE": "t", "LAB_LOCK_LAUNCH": "0"}).lock_launch is False
    assert load_settings({"LAB_MAX_QUEUED_PER_ADDRESS": "4"}).max_active_per_client == 4


@pytest.mark.parametrize("env,message", [
    ({"LAB_MAX_QUEUED_PER_CLIENT": "-1"}, "0 \\(no limit\\) or more"),
    ({"LAB_MAX_QUEUED_PER_CLIENT": "2.5"}, "a whole number"),
    ({"LAB_HEARTBEAT_S": "0"}, "positive"),
    ({"LAB_RUN_LOST_AFTER_S": "soon"}, "a number of seconds"),
    ({"LAB_TRUSTED_PROXIES": "one"}, "a whole number"),
    ({"LAB_LOCK_LAUNCH": "maybe"}, "1 or 0"),
    ({"LAB_MAX_RUNS_PER_STUDENT": "-2"}, "0 \\(no limit\\) or more"),
])
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=f"{next(iter(env))} must be {message}"):
        load_settings(env)
