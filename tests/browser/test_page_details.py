"""Issue 19's findings from a real browser, each fixed: one number for one thing, said plainly.

Fast tests render the pages from a store filled by hand (the ``app``/``client`` fixtures);
the browser tests drive Chromium against the real stack for what the page scripts do.
"""

from __future__ import annotations

import math
import re

from testkit.lab_stack import ENDLESS, TINY
from testkit.machine import cpu_model
from testkit.synthetic import photo_bytes
from tests.browser.pages import wait_result

# -- a store filled by hand -----------------------------------------------------------------



AXES = ("id => { const l = document.getElementById(id).layout;"
        " return { x: l.xaxis.range, y: l.yaxis.range, yType: l.yaxis.type,"
        " font: l.font.size, legendY: l.legend.y }; }")


TICKS = ("id => Array.from(document.querySelectorAll('#' + id + ' .ytick text'))"
         ".map(t => t.textContent)")


# Every chart's legend box against its axis titles' boxes: [chart, title] pairs that overlap.
OVERLAPS = """() => {
  const hit = (a, b) => a.left < b.right && b.left < a.right &&
                        a.top < b.bottom && b.top < a.bottom;
  const found = [];
  for (const chart of document.querySelectorAll('.chart')) {
    const legend = chart.querySelector('.legend');
    if (!legend) continue;
    const box = legend.getBoundingClientRect();
    for (const title of chart.querySelectorAll('.g-xtitle, .g-ytitle')) {
      if (hit(box, title.getBoundingClientRect())) found.push([chart.id, title.textContent]);
    }
  }
  return found;
}"""


# The mode bar's buttons, by title, and whether Plotly's logo link is there.
MODEBAR = ("id => ({ titles: Array.from(document.querySelectorAll('#' + id + ' .modebar-btn'))"
           ".map(b => b.getAttribute('data-title')),"
           " logo: !!document.querySelector('#' + id + ' .modebar-btn--logo') })")


def _assert_plain_rate_ticks(page) -> None:
    ticks = page.evaluate(f"({TICKS})('lr-chart')")
    assert ticks, "the learning-rate axis has no ticks"
    for tick in ticks:  # "0.001", "3e-4": numbers as typed, not "5", "2" or "1e−3"
        assert re.fullmatch(r"0\.0*[13]|[13]e-\d", tick), ticks


def test_a_queued_runs_empty_charts_have_fixed_axes_and_no_cloud_button(idle_lab, watched):
    busy = idle_lab.launch(ENDLESS)
    waiting = idle_lab.launch({**TINY, "epochs": 1})
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{waiting}")
    page.wait_for_function("document.getElementById('live-text').textContent === 'live'",
                           timeout=60_000)
    assert idle_lab.run(waiting)["status"] == "queued"
    acc = page.evaluate(f"({AXES})('acc-chart')")
    loss = page.evaluate(f"({AXES})('loss-chart')")
    rate = page.evaluate(f"({AXES})('lr-chart')")
    assert acc["y"] == [0, 1.02] and acc["x"] == [0, 1]  # 0-100 %, epoch 0 to 1
    assert loss["y"] == [0, 1]
    assert rate["yType"] == "log"
    low, high = rate["y"]  # a decade or so either side of the run's 0.01 (log10 -2)
    assert -3.5 < low < -2 < high < -1, rate["y"]
    _assert_plain_rate_ticks(page)
    for chart in ("acc-chart", "loss-chart", "lr-chart"):
        bar = page.evaluate(f"({MODEBAR})('{chart}')")
        assert bar["titles"], "no mode bar at all"
        assert not any("Share" in t or "Chart Studio" in t or "cloud" in t.lower()
                       for t in bar["titles"]), bar["titles"]
        assert not bar["logo"]
    assert idle_lab.post(f"/api/runs/{busy}/cancel").status_code == 202


def test_a_finished_run_page_in_a_browser_one_speed_plain_ticks_legend_clear_of_titles(
        idle_lab, watched):
    run_id = idle_lab.finished_run()
    phone = watched(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                    is_mobile=True, has_touch=True).page
    phone.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(phone)
    assert phone.evaluate(OVERLAPS) == []
    _assert_plain_rate_ticks(phone)
    # The rate the run ended at, as a number (0.01 or 0.005), not "1.0e-2".
    assert re.fullmatch(r"0\.0*[1-9]\d?", phone.locator("#stat-lr").inner_text())
    assert not phone.locator("#stat-speed-box").is_visible()
    assert phone.locator("main").inner_text().count("photos per second") == 1
    assert re.fullmatch(r"\d+\.\d % on \d+ photos \(best epoch \d+\)",
                        phone.locator("#result-accuracy").inner_text().strip())
    # Once the points are in, the loss axis fits them and accuracy stays 0-100 %.
    acc = phone.evaluate(f"({AXES})('acc-chart')")
    assert acc["y"] == [0, 1.02] and acc["x"][1] >= 3


def test_chart_text_is_larger_on_a_projector_and_a_wide_screen(idle_lab, watched):
    run_id = idle_lab.finished_run()
    sizes = {}
    for name, kw, present in (("laptop", {"width": 1360, "height": 900}, False),
                              ("wide", {"width": 1700, "height": 1000}, False),
                              ("projector", {"width": 1024, "height": 768}, True)):
        page = watched(viewport=kw).page
        if present:  # as ?present=1 does (base.html): the body's "present" class
            page.add_init_script(
                "new MutationObserver((_, obs) => { if (document.body) {"
                " document.body.classList.add('present'); obs.disconnect(); } })"
                ".observe(document, { childList: true, subtree: true });")
        page.goto(f"{idle_lab.url}/runs/{run_id}")
        wait_result(page)
        sizes[name] = page.evaluate(f"({AXES})('acc-chart')")["font"]
    assert sizes["laptop"] == 14 and sizes["wide"] >= 20 and sizes["projector"] >= 20, sizes


def test_predict_upload_by_keyboard_alone_then_clear_results(idle_lab, watched, tmp_path):
    idle_lab.finished_run()
    photo = tmp_path / "rex.jpg"
    photo.write_bytes(photo_bytes("dog", size=120, seed=3))
    page = watched().page
    # Playwright turns on catching file choosers when the first listener is added, and
    # asynchronously: added only as the key is pressed, it missed the chooser about half
    # the time (the page had opened it: its click reached the file input).
    page.on("filechooser", lambda chooser: None)
    page.goto(idle_lab.url + "/predict")
    page.locator("h1").click()  # start from the page, then only the keyboard
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "dropzone":
            break
    else:
        raise AssertionError("Tab never reached the drop zone")
    # A focus ring a sighted keyboard user can see.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photo))
    page.wait_for_selector(".result .verdict", timeout=120_000)
    verdict = page.locator(".result .verdict")
    assert verdict.locator("svg").count() == 1  # drawn, not an emoji a font may lack
    assert re.fullmatch(r"(Cat|Dog) · \d+\.\d % sure", verdict.inner_text().strip())
    assert not re.search("[\U0001F300-\U0001FAFF]", page.locator("#results").inner_text())
    # Space opens the chooser too.
    page.focus("#dropzone")
    with page.expect_file_chooser() as again:
        page.keyboard.press("Space")
    again.value.set_files(str(photo))
    page.wait_for_function("document.querySelectorAll('.result').length === 2", timeout=120_000)
    page.focus("#clear-results")
    page.keyboard.press("Enter")
    assert page.locator(".result").count() == 0
    assert not page.locator("#clear-results").is_visible()


def test_train_form_names_a_number_box_the_browser_could_not_read(idle_lab, watched):
    before = len(idle_lab.get("/api/runs").json()["runs"])
    page = watched().page
    page.goto(idle_lab.url + "/train")
    page.fill("#f-epochs", "1")
    page.focus("#f-limit")
    page.keyboard.type("1e")  # the browser's value for this is "", i.e. "all photos"
    page.click("#start")
    error = page.locator("#form-error")
    error.wait_for(state="visible")
    assert error.inner_text() == \
        "Photos used is not a number: fix the marked box before starting."
    assert "not a number" in page.locator("#e-limit").inner_text()
    assert page.evaluate("document.activeElement.id") == "f-limit"
    assert page.url.endswith("/train")
    assert len(idle_lab.get("/api/runs").json()["runs"]) == before  # nothing launched
    # The learning rate says the recipe's number, and follows the recipe.
    from ml.recipes import RECIPES

    other = next(r for r in RECIPES.values() if r.name != "fast_cnn")
    page.check(f"input[name=recipe][value={other.name}]")
    assert page.get_attribute("#f-learning_rate", "placeholder") == \
        f"the recipe's rate: {other.learning_rate:g}"
    assert page.locator("#blank-image_size").inner_text() == \
        f"the recipe's size: {other.image_size} px"


def test_the_worker_and_the_run_page_say_what_it_trains_on(idle_lab, watched):
    workers = idle_lab.get("/api/health").json()["workers"]
    assert workers and workers[0]["device"]["kind"] == "cpu"
    assert workers[0]["device"]["name"] == cpu_model()
    run_id = idle_lab.launch({**TINY, "epochs": 1})
    idle_lab.wait_status(run_id, "succeeded")
    started = next(e for e in idle_lab.events(run_id) if e["type"] == "run_started")
    assert started["device"] == workers[0]["device"]
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    page.wait_for_function("document.getElementById('device').textContent.startsWith('On ')")
    cache = started["photo_cache"]  # and whether it decoded the photos or found them ready
    said = (f" · decoded the photos once for every run ({math.floor(cache['seconds'] + 0.5)} s)"
            if cache["state"] == "built" else " · photos already decoded by an earlier run")
    assert page.locator("#device").inner_text() == \
        f"On {cpu_model()} ({started['device']['cores']} cores){said}"
