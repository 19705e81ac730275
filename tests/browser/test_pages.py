"""The dashboard in a real browser: Playwright drives Debian's Chromium against the real stack.

Each test fails on any console error or uncaught page error. Screenshots of every tab go to
tests/artifacts/screenshots/ (the README uses some of them).
"""

from __future__ import annotations

from testkit.lab_stack import ENDLESS, TINY
from testkit.synthetic import photo_bytes
from tests.browser.pages import (
    POINTS,
    all_events,
    fill_train_form,
    points,
    shot,
    wait_points,
    wait_result,
)


def test_every_tab_opens_and_looks_right(idle_lab, watched):
    w = watched()
    page = w.page
    page.goto(idle_lab.url + "/dataset")
    assert page.locator("h1").first.inner_text()
    shot(page, "dataset")
    page.goto(idle_lab.url + "/train")
    from ml.recipes import RECIPES

    assert page.locator("input[name=recipe]").count() == len(RECIPES) == 6
    for recipe in RECIPES.values():  # each offered by name with its one-line description
        assert recipe.description in page.locator(".recipes").inner_text()
    assert page.locator("#f-epochs").input_value() == "20"
    shot(page, "train")
    page.click("nav >> text=Runs")
    page.wait_for_url("**/runs")
    shot(page, "runs")
    page.click("nav >> text=Predict")
    page.wait_for_url("**/predict")
    assert page.locator("h1").inner_text() == "Is it a cat or a dog?"
    # No raw JSON or tracebacks for people: a missing run is a page.
    page.goto(idle_lab.url + "/runs/no-such-run")
    assert "There is no run" in page.locator("main").inner_text()
    assert "Traceback" not in page.content()
    # Chromium logs the 404 status of that page itself as a console error: expected here.
    w.problems = [p for p in w.problems if "/runs/no-such-run" not in p]


def test_form_shows_inline_errors(idle_lab, watched):
    page = watched().page
    page.goto(idle_lab.url + "/train")
    fill_train_form(page, epochs=0, learning_rate=-1)
    page.click("#start")
    page.wait_for_selector(".field.invalid")
    errors = page.locator(".field.invalid .error").all_inner_texts()
    assert any("at least 1" in e for e in errors) and len(errors) == 2
    assert page.locator("#f-learning_rate").input_value() == "-1"  # what was typed stays


def test_choosing_a_recipe_fills_its_settings_and_the_run_follows_its_schedule(
        idle_lab, watched):
    page = watched().page
    page.goto(idle_lab.url + "/train")
    assert page.locator("#f-schedule").input_value() == "plateau"
    page.check("input[name=recipe][value=sprint_cnn]")
    assert page.locator("#f-epochs").input_value() == "12"
    assert page.locator("#f-schedule").input_value() == "one_cycle"
    assert page.locator("#f-label_smoothing").input_value() == "0.1"
    assert "sprint_cnn's settings" in page.locator("#recipe-note").inner_text()
    # Back to the default recipe: its own settings come back.
    page.check("input[name=recipe][value=fast_cnn]")
    assert page.locator("#f-epochs").input_value() == "20"
    assert page.locator("#f-schedule").input_value() == "plateau"
    # flash_cnn's small images first, and off again (an empty box, not "None") after it
    page.check("input[name=recipe][value=flash_cnn]")
    assert page.locator("#f-small_image_size").input_value() == "64"
    assert page.locator("#f-small_epochs").input_value() == "8"
    assert "first 8 at 64 px" in page.locator("label.recipe:has-text('flash_cnn')").inner_text()
    page.check("input[name=recipe][value=sprint_cnn]")
    assert page.locator("#f-small_image_size").input_value() == ""
    assert page.locator("#f-small_epochs").input_value() == "0"
    fill_train_form(page, epochs=3, image_size=32, batch_size=8, limit=48)
    page.select_option("#f-precision", "float32")
    page.uncheck("input[name=augment]")
    page.click("#start")
    page.wait_for_url("**/runs/*")
    wait_result(page)
    page.click("summary:has-text('Settings of this run')")
    config = page.locator("#run-settings dl").inner_text()
    assert "one_cycle" in config and "sprint_cnn" in config and "float32" in config
    # The rate chart traces the schedule step by step (it rises through the warm-up, then
    # falls), and a fixed schedule shows no plateau cuts.
    rates = page.evaluate("document.getElementById('lr-chart').data[0].y")
    peak = rates.index(max(rates))
    assert len(set(rates)) >= 4 and 0 < peak < len(rates) - 1 and rates[-1] < rates[peak] / 5
    assert points(page, "lr-chart", 1) == 0
    shot(page, "run-one-cycle")


SHADED = ("id => (document.getElementById(id).layout.shapes || [])"
          ".filter(s => s.type === 'rect').map(s => [s.x0, s.x1])")
LABELS = ("id => (document.getElementById(id).layout.annotations || [])"
          ".map(a => a.text)")


def test_a_progressive_run_shades_its_small_epochs_and_says_when_the_photos_grow(
        idle_lab, watched):
    progressive = {**TINY, "recipe": "flash_cnn", "image_size": 48, "small_image_size": 32,
                   "limit": 48}
    page = watched().page
    # While it runs, the line above the charts says so (at the end it says "Finished.").
    busy = idle_lab.launch({**progressive, "small_epochs": 150, "epochs": 300})
    page.goto(f"{idle_lab.url}/runs/{busy}")
    page.wait_for_function("document.getElementById('phase').textContent.includes('px')",
                           timeout=120_000)
    assert "48 px (the first 150 epochs at 32 px)" in page.locator("#phase").inner_text()
    page.goto(idle_lab.url + "/")  # the home page names the live run's settings
    page.wait_for_function("document.getElementById('live-settings').textContent"
                           ".includes('the first 150 epochs at 32 px')", timeout=30_000)
    assert idle_lab.post(f"/api/runs/{busy}/cancel").status_code == 202
    run_id = idle_lab.launch({**progressive, "small_epochs": 2, "epochs": 3})
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(page)
    assert idle_lab.run(run_id)["status"] == "succeeded"
    for chart in ("loss-chart", "acc-chart", "lr-chart"):
        assert page.evaluate(f"({SHADED})('{chart}')") == [[0, 2]], chart
        assert "32 px photos" in page.evaluate(f"({LABELS})('{chart}')"), chart
    notes = page.locator("#run-notes li").all_inner_texts()
    small = [n for n in notes if n.startswith("Epoch 1: training starts on small 32 px")]
    assert small and "44 % of the pixels" in small[0], notes
    assert any(n.startswith("Epoch 3: the training photos grow to the full 48 px")
               for n in notes), notes
    assert "48 px (the first 2 epochs trained at 32 px)" in page.locator("#run-result").inner_text()
    shot(page, "run-progressive")


def test_launch_from_the_form_and_watch_live_on_two_pages(idle_lab, watched):
    first = watched().page
    first.goto(idle_lab.url + "/train")
    # Long enough (about 20 s) for both pages to catch it running.
    fill_train_form(first, epochs=40, image_size=32, batch_size=8, learning_rate=0.01,
                    early_stopping_patience=100)
    first.uncheck("input[name=augment]")
    first.click("#start")
    first.wait_for_url("**/runs/*")
    run_url = first.url
    second = watched().page  # another viewer, e.g. a student's laptop
    second.goto(run_url)
    for page in (first, second):
        page.evaluate("window.__sameLoad = true")  # gone if the page reloads
    live = ("() => document.getElementById('status').textContent === 'running' && "
            "document.getElementById('loss-chart').data[0].x.length > 0")
    for page in (first, second):
        # Batch points while the run is still running: drawn live, not replayed.
        page.wait_for_function(live, timeout=120_000)
    first.wait_for_function(f"({POINTS})('loss-chart', 1) >= 4 && "
                            "document.getElementById('status').textContent === 'running'",
                            timeout=120_000)
    shot(first, "run-live")
    for page in (first, second):
        wait_result(page)  # swapped in where the page watched it end
        assert page.evaluate("window.__sameLoad === true")
        assert page.locator("#status").text_content() == "succeeded"
        # Batch points (running means) outnumber epoch points.
        assert points(page, "loss-chart", 0) > points(page, "loss-chart", 1) > 0
    assert first.locator("#download").is_visible()
    assert first.locator("#download").get_attribute("href").endswith("/model.keras")
    shot(first, "run-finished")


def test_the_result_of_a_run_appears_in_place_when_it_ends(idle_lab, watched):
    run_id = idle_lab.launch({**TINY, "epochs": 3})
    page = watched().page
    navigations: list[str] = []
    fragments: list[str] = []
    page.on("framenavigated", lambda f: f == page.main_frame and navigations.append(f.url))
    page.on("request", lambda r: r.url.endswith(f"/runs/{run_id}/result")
            and fragments.append(r.url))
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    assert page.locator("#run").get_attribute("data-status") in ("queued", "running")
    assert page.locator("#confusion").count() == 0 and not page.locator("#download").is_visible()
    page.evaluate("window.__marker = 1")  # gone if the page reloads
    wait_result(page)
    assert page.evaluate("window.__marker") == 1
    assert navigations == [f"{idle_lab.url}/runs/{run_id}"]  # the goto, nothing since
    assert len(fragments) == 1
    assert page.locator("#run-result").count() == 1  # replaced, not added beside
    assert page.locator("#status").text_content() == "succeeded"
    assert page.locator("#status").get_attribute("class") == "badge succeeded"
    assert page.locator("#phase").inner_text() == "Finished."
    assert not page.locator("#cancel").is_visible()
    assert page.locator("#download").is_visible()
    assert page.locator("#download").get_attribute("href") == f"/runs/{run_id}/model.keras"
    assert page.locator("#misclassified").count() == 1
    run = idle_lab.run(run_id)
    confusion = run["summary"]["validation"]["confusion"]
    cells = [int(c) for c in page.locator("#confusion td").all_inner_texts()]
    assert cells == confusion[0] + confusion[1]
    # Everything drawn before the result appeared: one epoch point a finished epoch.
    assert points(page, "loss-chart", 1) == run["epochs_done"] == 3
    page.locator("#confusion").scroll_into_view_if_needed()
    shot(page, "run-finished-in-place")
    # The fragment alone: the same section; a missing run is a sentence, not a traceback.
    fragment = idle_lab.get(f"/runs/{run_id}/result")
    assert fragment.status_code == 200 and 'id="run-result"' in fragment.text
    assert "<html" not in fragment.text and 'id="confusion"' in fragment.text
    missing = idle_lab.get("/runs/no-such-run/result")
    assert missing.status_code == 404 and "There is no run no-such-run" in missing.text


def test_queue_position_and_cancel_from_the_run_pages(idle_lab, watched):
    running = idle_lab.launch(ENDLESS)
    queued = idle_lab.launch({**TINY, "epochs": 1})
    # Until the worker takes the first run both are waiting, and the second is rightly
    # "position 2": on a slow machine the page can load before the pick-up.
    idle_lab.wait_status(running, "running")
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{queued}")
    assert "position 1" in page.locator("#phase").inner_text()
    page.click("#cancel")  # asks first: one tap on a phone must not end a run
    assert page.locator("#cancel-question").inner_text() == "Cancel this run?"
    page.click("#cancel-no")
    assert page.locator("#cancel").is_visible() and idle_lab.run(queued)["status"] == "queued"
    page.click("#cancel")
    page.click("#cancel-yes")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'",
                           timeout=30_000)
    assert idle_lab.run(queued)["status"] == "cancelled"
    assert page.locator("#phase").inner_text() == "Cancelled by someone before it started."

    page.goto(f"{idle_lab.url}/runs/{running}")
    wait_points(page, "loss-chart", 1)  # an epoch has been drawn
    page.click("#cancel")
    page.click("#cancel-yes")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'",
                           timeout=60_000)
    assert idle_lab.run(running)["status"] == "cancelled"


def test_queue_position_is_pushed_to_a_waiting_page_not_polled(idle_lab, watched):
    """The server sends ``queue_position`` {run_id, queue_position} to the run's room each
    time the queue changes; the page only listens (no HTTP polling)."""
    running = idle_lab.launch(ENDLESS)
    idle_lab.wait_status(running, "running")
    ahead = idle_lab.launch({**TINY, "epochs": 1})
    waiting = idle_lab.launch({**TINY, "epochs": 1})
    page = watched().page
    asked: list[str] = []
    page.on("request", lambda r: "/api/runs/" in r.url and asked.append(r.url))
    page.goto(f"{idle_lab.url}/runs/{waiting}")
    assert "position 2" in page.locator("#phase").inner_text()  # from the page itself
    page.wait_for_function("document.getElementById('live-text').textContent === 'live'",
                           timeout=30_000)  # in the run's room
    assert idle_lab.post(f"/api/runs/{ahead}/cancel").status_code == 202
    page.wait_for_function("document.getElementById('phase').textContent"
                           ".includes('position 1')", timeout=20_000)
    assert page.locator("#status").text_content() == "queued"
    # The worker frees up: the run leaves the queue, then starts.
    assert idle_lab.post(f"/api/runs/{running}/cancel").status_code == 202
    page.wait_for_function("!document.getElementById('phase').textContent"
                           ".includes('position')", timeout=90_000)
    assert asked == []  # nothing polled: every change was pushed


def test_replayed_run_marks_early_stop_and_shows_its_mistakes(idle_lab, watched):
    # A learning rate so small nothing is learnt: early stop at epoch 2, and a model that
    # gets about half of the validation photos wrong.
    run_id = idle_lab.launch({**TINY, "recipe": "seed_cnn", "image_size": 48, "epochs": 6,
                              "learning_rate": 1e-7, "lr_patience": 0,
                              "early_stopping_patience": 1})
    run = idle_lab.wait_status(run_id, ("succeeded", "failed"))
    assert run["status"] == "succeeded"
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    page.wait_for_function("() => { const l = document.getElementById('loss-chart').layout;"
                           " return l.annotations.some(a => a.text.includes('early stop')); }",
                           timeout=30_000)
    assert page.evaluate("document.getElementById('acc-chart').layout.shapes.length") == 1
    assert points(page, "lr-chart", 1) >= 1  # the reduction marker
    wrong = run["summary"]["validation"]["errors"]
    thumbs = page.locator("#misclassified img")
    if wrong:
        assert thumbs.count() == wrong
        thumbs.first.scroll_into_view_if_needed()
        page.wait_for_function("() => Array.from(document.querySelectorAll('#misclassified img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    else:
        assert "every validation photo was right" in page.locator("#misclassified").inner_text()
    shot(page, "run-early-stopped")


def test_predict_shows_label_confidence_and_heatmap(idle_lab, watched, tmp_path):
    idle_lab.finished_run()
    photo = tmp_path / "my cat.jpg"
    photo.write_bytes(photo_bytes("cat", size=120, seed=7))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    page = watched().page
    page.goto(idle_lab.url + "/predict")
    page.set_input_files("#photos", [str(photo), str(bad)])
    page.wait_for_selector(".result .verdict", timeout=120_000)
    verdict = page.locator(".result .verdict").inner_text()
    assert ("Cat" in verdict or "Dog" in verdict) and "%" in verdict
    assert page.locator(".result img.heatmap").get_attribute("src").startswith(
        "data:image/png;base64,")
    width = page.locator(".confidence > div").first.evaluate("e => e.style.width")
    assert float(width.rstrip("%")) >= 50
    assert "not" in page.locator(".result.error").inner_text().lower()  # the bad file, named
    shot(page, "predict")


def test_runs_tab_overlays_ticked_runs(idle_lab, watched):
    finished = [r for r in idle_lab.get("/api/runs").json()["runs"]
                if r["status"] == "succeeded"]
    while len(finished) < 2:
        run_id = idle_lab.launch({**TINY, "epochs": 2})
        finished.append(idle_lab.wait_status(run_id, "succeeded"))
    with_history, without = finished[0]["id"], finished[1]["id"]
    page = watched().page
    # A finished run's summary carries its per-epoch history: the page reads that instead of
    # paging through every batch event. Here the first run's answer is given one (the
    # backend may already keep it), with values no real run has, to see which is drawn.
    history = [{"epoch": 1, "loss": 0.9, "accuracy": 0.5, "val_loss": 0.875,
                "val_accuracy": 0.375, "lr": 0.01, "seconds": 1.0, "images_per_s": 40.0},
               {"epoch": 2, "loss": 0.7, "accuracy": 0.6, "val_loss": 0.625,
                "val_accuracy": 0.625, "lr": 0.01, "seconds": 1.0, "images_per_s": 40.0}]
    answered_history: dict[str, bool] = {}

    def run_answer(route):
        resp = route.fetch()
        body = resp.json()
        if body.get("id") == with_history:
            body["summary"] = {**(body.get("summary") or {}), "history": history}
        answered_history[body.get("id")] = bool((body.get("summary") or {}).get("history"))
        route.fulfill(response=resp, json=body)

    events_read: list[str] = []
    page.route("**/api/runs/*", run_answer)  # /api/runs/<id> only: * stops at a slash
    page.on("request", lambda r: "/events" in r.url and events_read.append(r.url))
    page.goto(idle_lab.url + "/runs?status=succeeded")  # both on its first page
    for run_id in (with_history, without):
        page.check(f"input[value='{run_id}']")
    page.click("#overlay")
    page.wait_for_url("**/runs/compare*")
    page.wait_for_function("() => { const el = document.getElementById('cmp-acc');"
                           " return el.data && el.data.length === 2 &&"
                           " el.data.every(t => t.x.length > 0); }", timeout=30_000)
    acc = page.evaluate("document.getElementById('cmp-acc').data.map(t => [t.x, t.y])")
    order = page.evaluate("Array.from(document.querySelectorAll('.cmp-run'))"
                          ".map(r => r.dataset.runId)")
    assert acc[order.index(with_history)] == [[1, 2], [0.375, 0.625]]
    loss = page.evaluate(f"document.getElementById('cmp-loss').data[{order.index(with_history)}].y")
    assert loss == [0.875, 0.625]
    # Events are read only for runs whose answer had no history (none, once the backend
    # keeps it), and then only until they end.
    assert answered_history[with_history] is True
    assert not any(f"/runs/{with_history}/events" in url for url in events_read)
    assert any(f"/runs/{without}/events" in url for url in events_read) == (
        not answered_history[without])
    assert acc[order.index(without)][0] == [e["epoch"] for e in all_events(idle_lab, without)
                                            if e["type"] == "epoch"]
    shot(page, "compare")


def test_pages_fit_a_phone_screen(idle_lab, watched):
    page = watched(viewport={"width": 390, "height": 844}, is_mobile=True).page
    for path in ("/predict", "/runs", "/train", "/dataset"):
        page.goto(idle_lab.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} is {overflow}px wider than a phone screen"
    page.goto(idle_lab.url + "/predict")
    shot(page, "predict-phone")


def test_dataset_tab_downloads_the_dataset_on_a_worker_with_live_progress(empty_lab, watched):
    page = watched().page
    page.goto(empty_lab.url + "/dataset")
    assert "missing" in page.locator("#dataset-problem h2").inner_text()
    page.click("#download-start")
    page.wait_for_function("/^Downloading: .* of .*%/.test("
                           "document.getElementById('download-text').textContent)",
                           timeout=60_000)
    progress = page.locator("#download-text").inner_text()
    assert " of " in progress and "MB" in progress
    assert page.locator("#download-cancel").is_visible()
    assert not page.locator("#download-start").is_visible()
    shot(page, "dataset-downloading")
    # When it is done the page reloads with the photos.
    page.wait_for_selector(".ds-stats", timeout=120_000)
    stats = page.locator(".ds-stats").inner_text()
    assert "24" in stats and "12" in stats  # 24 photos, 12 of each
    state = empty_lab.get("/api/dataset/download").json()
    assert state["state"] == "succeeded" and state["done"] == state["total"]
    # A second download would overwrite it: refused.
    again = empty_lab.post("/api/dataset/download", json={})
    assert again.status_code == 409 and "already holds a dataset" in again.json()["error"]
    assert empty_lab.post("/api/dataset/download/cancel").status_code == 409


def test_live_stream_goes_on_through_a_redis_outage_without_reload(idle_lab, watched):
    run_id = idle_lab.launch({**ENDLESS, "epochs": 500, "image_size": 128})
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_points(page, "loss-chart", 0)
    page.evaluate("window.__sameLoad = true")  # gone if the page reloads

    def grows_by(n: int) -> None:
        start = points(page, "loss-chart", 0)
        page.wait_for_function(f"({POINTS})('loss-chart', 0) >= {start + n}", timeout=90_000)

    idle_lab.redis.stop()
    grows_by(5)  # the worker trains on; the page hears of it through the web's store poll
    idle_lab.start_redis()
    grows_by(5)
    assert page.evaluate("window.__sameLoad === true")
    assert page.locator("#status").text_content() == "running"
    page.click("#cancel")  # cancelling works again once Redis is back
    page.click("#cancel-yes")
    page.wait_for_function("document.getElementById('status').textContent === 'cancelled'",
                           timeout=90_000)


def test_locked_lab_unlock_then_launch_while_visitors_only_watch(idle_locked_lab, watched):
    from testkit.lab_stack import PASSCODE

    lab = idle_locked_lab
    visitor = watched().page
    visitor.goto(lab.url + "/train")
    assert visitor.locator("#unlock-link").is_visible()
    fill_train_form(visitor, epochs=300, image_size=128, batch_size=8,
                    early_stopping_patience=100)
    visitor.click("#start")  # no passcode typed
    visitor.wait_for_selector(".field.passcode.invalid")
    assert "needs the lab passcode" in visitor.locator(".notice.error").inner_text()
    assert visitor.input_value("#f-epochs") == "300"  # what was typed stays

    instructor = watched().page
    instructor.goto(lab.url + "/runs")
    instructor.click("#unlock-link")
    instructor.fill("#passcode", "wrong")
    instructor.click("#unlock")
    assert "not the lab passcode" in instructor.locator("#unlock-error").inner_text()
    shot(instructor, "unlock")
    instructor.fill("#passcode", PASSCODE)
    instructor.click("#unlock")
    instructor.wait_for_url("**/runs")
    assert "Unlocked" in instructor.locator(".lockstate").inner_text()
    instructor.goto(lab.url + "/train")
    assert instructor.locator("#f-passcode").count() == 0  # remembered for this browser
    fill_train_form(instructor, epochs=300, image_size=128, batch_size=8,
                    early_stopping_patience=100)
    instructor.click("#start")
    instructor.wait_for_url("**/runs/*")
    wait_points(instructor, "loss-chart", 0)

    visitor.goto(instructor.url)  # a student watches the instructor's run
    wait_points(visitor, "loss-chart", 0)
    assert visitor.locator("#cancel").count() == 0
    assert visitor.locator("#unlock-to-cancel").is_visible()
    shot(visitor, "run-locked")
    instructor.click("#cancel")
    instructor.click("#cancel-yes")
    for page in (instructor, visitor):
        page.wait_for_function(
            "document.getElementById('status').textContent === 'cancelled'", timeout=90_000)


def test_markup_in_names_never_runs_and_photos_can_be_dropped(idle_locked_lab, watched):
    from testkit.hostile import HOSTILE_NAME

    lab = idle_locked_lab
    lab.finished_run()
    watcher = watched()
    page = watcher.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    no_script_ran = "typeof window.__xss === 'undefined'"  # what the names would set
    page.goto(lab.url + "/dataset?sort=image_path&order=desc")
    assert page.get_by_text(HOSTILE_NAME, exact=False).count() >= 1  # shown, as text
    assert page.evaluate(no_script_ran)
    page.goto(lab.url + "/predict")
    # Drop a photo whose name is markup, and a too-large batch, as a person would drag them.
    photo = list(photo_bytes("cat", size=80, seed=11))
    page.evaluate("""([bytes, name]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'}));
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dt, bubbles: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", [photo, HOSTILE_NAME + ".jpg"])
    page.wait_for_selector(".result .verdict", timeout=60_000)
    assert page.locator(".result figcaption").first.inner_text() == HOSTILE_NAME + ".jpg"
    assert page.evaluate(no_script_ran)
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(25 * 1048576)], 'huge.jpg', {type: 'image/jpeg'}));
        document.getElementById('dropzone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""")
    error = page.locator("#predict-error")
    error.wait_for(state="visible")
    assert "at most 20.0 MB" in error.inner_text() and "25.0 MB" in error.inner_text()
    # Each page is checked before the next navigation wipes `window`.
    for path in ("/dataset?label=cat&sort=image_path&order=desc", "/runs", "/train",
                 "/runs/%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
        page.goto(lab.url + path)
        assert page.evaluate(no_script_ran), path
    assert dialogs == []
    watcher.problems = [p for p in watcher.problems if "404" not in p]  # the missing run
