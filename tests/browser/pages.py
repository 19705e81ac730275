"""What the browser tests do to a page: wait for charts and results, take screenshots, fill
the Train form, read a run's stored events."""

from __future__ import annotations

import shutil

from testkit.paths import ROOT

# Screenshots of every tab (the README uses some of them).
ARTIFACTS = ROOT / "tests" / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POINTS = "(id, trace) => { const el = document.getElementById(id);" \
         " return el && el.data && el.data[trace] ? el.data[trace].x.length : 0; }"


def all_events(lab, run_id: str) -> list[dict]:
    """Every stored event of a run, page after page."""
    found: list[dict] = []
    while True:
        body = lab.get(f"/api/runs/{run_id}/events",
                       params={"after": found[-1]["seq"] if found else 0}).json()
        found += body["events"]
        if not body["more"]:
            return found


def points(page, chart: str, trace: int) -> int:
    return page.evaluate(f"({POINTS})('{chart}', {trace})")


def wait_points(page, chart: str, trace: int, timeout: float = 120_000) -> None:
    """Until a chart's trace has at least one point."""
    page.wait_for_function(f"({POINTS})('{chart}', {trace}) > 0", timeout=timeout)


def wait_result(page, timeout: float = 180_000) -> None:
    """Until the run's result is on its page with every curve drawn.

    A page that watched the run end gets the result swapped in after its last event is drawn;
    a page opened on a finished run has it from the server and has drawn the replay once
    its live text says "replayed" (the join's reply follows the replayed events).
    """
    page.wait_for_function(
        "() => { const active = ['queued', 'running'];"
        " const watched = active.includes(document.getElementById('run').dataset.status);"
        " return !!document.getElementById('confusion') &&"
        " !active.includes(document.getElementById('status').textContent) &&"
        " (watched || document.getElementById('live-text').textContent === 'replayed'); }",
        timeout=timeout)


class Watched:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser, **context_kw):
        self.context = browser.new_context(**{"viewport": {"width": 1360, "height": 900},
                                              **context_kw})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console: {m.text} ({m.location.get('url')})"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def close(self) -> None:
        self.context.close()
        assert self.problems == []


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def fill_train_form(page, **values) -> None:
    for name, value in values.items():
        page.fill(f"#f-{name}", str(value))
