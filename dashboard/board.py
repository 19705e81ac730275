"""The class's views: the home page, the leaderboard and what the class learned.

The pages are shells that static/home.js, leaderboard.js and class.js fill from the API
(``/api/home``, ``/api/leaderboard``, ``/api/class`` in ``dashboard.api``, built by
``dashboard.class_board``) and keep fresh: the leaderboard and the home page poll their JSON
every few seconds (the Socket.IO channel has rooms per run only, no lab-wide one), and the
home page follows the live run through that run's room like the run page does.
"""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("board", __name__)


@bp.get("/")
def home():
    return render_template("home.html", tab="home")


@bp.get("/leaderboard")
def leaderboard_page():
    return render_template("leaderboard.html", tab="leaderboard")


@bp.get("/class")
def class_page():
    return render_template("class.html", tab="class")
