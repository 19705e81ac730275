"""What the Runs tab and ``GET /api/runs`` list: the filters, sort and page of a request.

Both read the same plain query parameters, so a link or the back button keeps a view:

``mine`` (1/0: only this browser's runs), ``by`` (an owner's name), ``status`` (one or more,
comma-separated), ``recipe``, ``sort`` (created, started, accuracy, duration), ``order``
(desc, asc), ``page`` (from 1), ``per_page``, ``archived`` (1: archived runs too, for
passcode holders).

The page is lenient (a bad value is named in a notice and left out); the API is strict (a
400 with the same sentence). The store does the filtering, sorting and paging in SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.store import SORTS, STATUSES, RunStore
from dashboard import access
from dashboard.helpers import BadArgument
from ml.recipes import RECIPES

PER_PAGE = 25
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000
ORDERS = ("desc", "asc")
SORT_LABELS = {"created": "launched", "started": "start time", "accuracy": "best accuracy",
               "duration": "duration"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class RunQuery:
    """One view of the run list. ``per_page`` None: every matching run on one page."""

    mine: bool = False
    by: str | None = None
    statuses: tuple[str, ...] = ()
    recipe: str | None = None
    sort: str = "created"
    order: str = "desc"
    page: int = 1
    per_page: int | None = PER_PAGE
    archived: bool = False

    def args(self, **changes: Any) -> dict[str, Any]:
        """The query parameters of this view (with ``changes``), for links; every value
        given, so a link means the same view whatever the defaults."""
        view = dataclasses.replace(self, **changes)
        found: dict[str, Any] = {"mine": int(view.mine), "sort": view.sort,
                                 "order": view.order}
        if view.by:
            found["by"] = view.by
        if view.statuses:
            found["status"] = ",".join(view.statuses)
        if view.recipe:
            found["recipe"] = view.recipe
        if view.page != 1:
            found["page"] = view.page
        if view.per_page not in (None, PER_PAGE):
            found["per_page"] = view.per_page
        if view.archived:
            found["archived"] = 1
        return found


def _switch(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadArgument(f"{name} must be 1 or 0, got {raw[:40]!r}")


def _whole(name: str, raw: str, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadArgument(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not 1 <= value <= high:
        raise BadArgument(f"{name} must be between 1 and {high}, got {value}")
    return value


def _statuses(raw: list[str]) -> tuple[str, ...]:
    wanted = [s.strip().lower() for value in raw for s in value.split(",") if s.strip()]
    for status in wanted:
        if status not in STATUSES:
            raise BadArgument(f"there is no status {status[:40]!r}: use "
                              f"{', '.join(STATUSES[:-1])} or {STATUSES[-1]}")
    return tuple(dict.fromkeys(wanted))


def parse(args: Mapping[str, Any], *, mine_default: bool, paged: bool, lenient: bool
          ) -> tuple[RunQuery, list[str]]:
    """The view a request asks for, and a sentence for each bad value it left out.

    ``args``: the request's ``request.args``; ``mine_default``: whether "mine" is on when not
    given; ``paged``: whether a page is PER_PAGE runs when neither ``page`` nor
    ``per_page`` is given (else every run). Strict (``lenient`` False): the first bad value
    raises :class:`BadArgument` instead.
    """
    values: dict[str, Any] = {"mine": mine_default,
                              "per_page": PER_PAGE if paged or "page" in args else None}
    problems: list[str] = []
    readers = {
        "mine": lambda raw: _switch("mine", raw),
        "archived": lambda raw: _switch("archived", raw),
        "by": lambda raw: access.clean_name(raw),
        "recipe": _recipe,
        "sort": _sort,
        "order": _order,
        "page": lambda raw: _whole("page", raw, MAX_PAGE),
        "per_page": lambda raw: _whole("per_page", raw, MAX_PER_PAGE),
    }
    for name, read in readers.items():
        raw = args.get(name)
        if raw is None or not str(raw).strip():
            continue
        try:
            values[name] = read(str(raw))
        except BadArgument as exc:
            if not lenient:
                raise
            problems.append(str(exc))
    try:
        values["statuses"] = _statuses(args.getlist("status") if hasattr(args, "getlist")
                                       else [args.get("status") or ""])
    except BadArgument as exc:
        if not lenient:
            raise
        problems.append(str(exc))
    return RunQuery(**values), problems


def _recipe(raw: str) -> str:
    if raw not in RECIPES:
        raise BadArgument(f"there is no recipe {raw[:40]!r}: use {', '.join(RECIPES)}")
    return raw


def _sort(raw: str) -> str:
    if raw not in SORTS:
        raise BadArgument(f"sort must be {', '.join(SORTS[:-1])} or {SORTS[-1]}, got "
                          f"{raw[:40]!r}")
    return raw


def _order(raw: str) -> str:
    if raw not in ORDERS:
        raise BadArgument(f"order must be desc or asc, got {raw[:40]!r}")
    return raw


def find(store: RunStore, view: RunQuery) -> tuple[list[dict[str, Any]], int]:
    """The runs of one page of the view and how many match in all."""
    owner = access.owner_id(create=False) if view.mine else None
    if view.mine and owner is None:
        return [], 0  # a browser with no id has launched nothing
    per_page = view.per_page
    return store.find_runs(owner=owner, owner_name=view.by, statuses=view.statuses or None,
                           recipe=view.recipe, sort=view.sort,
                           descending=view.order == "desc",
                           offset=(view.page - 1) * per_page if per_page else 0,
                           limit=per_page, include_archived=view.archived)


def has_launched(store: RunStore) -> bool:
    """Whether this browser has launched any run (its "mine" is then on by default)."""
    owner = access.owner_id(create=False)
    return owner is not None and store.count_runs(statuses=STATUSES, owner=owner) > 0


def page_links(page: int, pages: int, *, around: int = 2) -> list[int | None]:
    """Page numbers to link: the first, the last and ``around`` either side of ``page``;
    None where some are left out (drawn as "…")."""
    shown = sorted({1, pages, *range(max(1, page - around), min(pages, page + around) + 1)})
    links: list[int | None] = []
    for n in shown:
        if links and n - (links[-1] or 0) > 1:
            links.append(None)
        links.append(n)
    return links
