"""Watching the model learn, in real Chromium on the real stack: the panel of photos judged
epoch by epoch (live and replayed alike), the confusion matrix over the same slider, the
overfitting sentence, the kept model's heat-maps; and Predict's camera, paste and two models
side by side."""

from __future__ import annotations

import base64

import pytest

from testkit.lab_stack import TINY
from testkit.synthetic import photo_bytes
from tests.browser import pages

wait_result, all_events = pages.wait_result, pages.all_events

# What the panel shows for the slider's epoch: each photo's caption and needle, the label,
# and the confusion matrix's cells.
PANEL_STATE = """() => ({
  epoch: document.getElementById('panel-slider').value,
  max: document.getElementById('panel-slider').max,
  captions: Array.from(document.querySelectorAll('#panel-grid figcaption')).map(c => c.textContent),
  needles: Array.from(document.querySelectorAll('#panel-grid .needle'))
    .map(n => parseFloat(n.style.left)),
  wrong: document.querySelectorAll('#panel-grid .panel-photo.wrong').length,
  images: Array.from(document.querySelectorAll('#panel-grid img')).map(i => i.getAttribute('src')),
  confusion: [0, 1].map(t => [0, 1].map(g =>
    Number(document.getElementById('cm-' + t + '-' + g).textContent))),
})"""
# Every slider maximum the page showed, sampled as it watched.
RECORD_MAXES = """() => { window.__maxes = [];
  setInterval(() => { const s = document.getElementById('panel-slider');
    if (s && !document.getElementById('panel-card').hidden) window.__maxes.push(Number(s.max)); },
    50); }"""


def _slide(page, epoch: int) -> dict:
    page.eval_on_selector("#panel-slider", "(s, v) => { s.value = String(v);"
                          " s.dispatchEvent(new Event('input')); }", epoch)
    return page.evaluate(PANEL_STATE)


def test_the_panel_moves_epoch_by_epoch_live_and_a_replay_draws_the_same(idle_lab, watched):
    epochs = 5
    # A low rate, so the network makes up its mind over the epochs rather than at once.
    run_id = idle_lab.launch({**TINY, "epochs": epochs, "early_stopping_patience": 20,
                              "learning_rate": 3e-4})
    live = watched().page
    live.goto(f"{idle_lab.url}/runs/{run_id}")
    live.evaluate(RECORD_MAXES)
    wait_result(live)
    events = all_events(idle_lab, run_id)
    panels = [e for e in events if e["type"] == "panel"]
    by_epoch = {e["epoch"]: e for e in events if e["type"] == "epoch"}
    assert [p["epoch"] for p in panels] == list(range(1, epochs + 1))
    assert len({tuple(i["image"] for i in p["items"]) for p in panels}) == 1  # same photos
    # The page grew its slider as epochs came in: it watched them live, not only replayed.
    maxes = live.evaluate("window.__maxes")
    assert maxes and maxes[-1] == epochs and min(maxes) < epochs, maxes

    live_states = {n: _slide(live, n) for n in range(1, epochs + 1)}
    first, last = live_states[1], live_states[epochs]
    assert len(first["captions"]) == len(panels[0]["items"])
    assert first["needles"] != last["needles"]  # the bars moved between epochs
    for n, state in live_states.items():  # the slider moves the panel and the matrix back
        assert state["epoch"] == str(n)
        assert state["confusion"] == by_epoch[n]["confusion"]
        items = panels[n - 1]["items"]
        assert state["needles"] == pytest.approx([100 * i["cat_probability"] for i in items],
                                                 abs=0.051)
        assert state["wrong"] == sum((i["cat_probability"] >= 0.5) != (i["label"] == 1)
                                     for i in items)
    # Every panel photo is served to the page (thumbnails from the dataset folder).
    for src in first["images"]:
        assert idle_lab.get(src).status_code == 200

    replay = watched().page
    replay.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(replay)
    assert replay.evaluate(PANEL_STATE)["max"] == str(epochs)
    assert {n: _slide(replay, n) for n in range(1, epochs + 1)} == live_states

    # At the end: the kept model's heat-maps of the same photos, each served as a PNG.
    heatmaps = replay.locator("#heatmaps img")
    assert heatmaps.count() == len(panels[0]["items"])
    for src in (heatmaps.nth(i).get_attribute("src") for i in range(heatmaps.count())):
        resp = idle_lab.get(src)
        assert resp.status_code == 200 and resp.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert idle_lab.get(f"/runs/{run_id}/panel/99.png").status_code == 404
    # Plain words for beginners, on every run page.
    replay.locator("#panel-card").screenshot(path=str(pages.ARTIFACTS / "run-panel.png"))
    replay.click("#glossary summary")
    assert "How big a step" in replay.locator("#glossary").inner_text()


def test_a_run_made_to_overfit_says_so_at_the_epoch_it_starts(idle_lab, watched):
    # 20 photos, half held out, many epochs at a high rate: it memorises the other ten.
    run_id = idle_lab.launch({**TINY, "epochs": 14, "limit": 20, "val_split": 0.5,
                              "early_stopping_patience": 30, "lr_patience": 30})
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(page)
    said = [e for e in all_events(idle_lab, run_id) if e["type"] == "epoch" and e["insight"]]
    assert said, "the run did not overfit enough to be told"
    # One finding: begun once, then the same one said again, updated, at later epochs.
    since = said[0]["epoch"]
    assert {e["insight_since"] for e in said} == {since}
    assert said[0]["insight"].startswith(f"Overfitting from epoch {since}:")
    assert all(e["insight"].startswith(f"Overfitting since epoch {since}:") for e in said[1:])
    # The page says it once, under the epoch it began, as the last epoch left it.
    assert _overfitting_notes(page) == [(since, said[-1]["insight"])]


def _overfitting_notes(page) -> list[tuple[int, str]]:
    notes = page.locator("#run-notes li")
    shown = [(int(notes.nth(i).get_attribute("data-epoch")), notes.nth(i).inner_text())
             for i in range(notes.count())]
    return [s for s in shown if s[1].startswith("Overfitting")]


def _send(page, *bodies: dict) -> None:
    """Hands the page's scripts epoch events as run.js does with each one it receives."""
    page.evaluate("""bodies => { for (const b of bodies) document.dispatchEvent(
      new CustomEvent('lab:run-event', { detail: { type: 'epoch', ...b } })); }""",
                  list(bodies))


def test_what_happened_says_a_repeated_finding_once(idle_lab, watched):
    # Issue 33: the same overfitting sentence was listed at epoch 7 and again at epoch 9.
    run_id = idle_lab.finished_run()
    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(page)
    assert _overfitting_notes(page) == []  # the 3-epoch model learns without overfitting
    # A run stored before insight_since: each repeat began anew; the first one is kept.
    _send(page, {"epoch": 7, "insight": "Overfitting from epoch 7: first."},
          {"epoch": 9, "insight": "Overfitting from epoch 9: again."})
    assert _overfitting_notes(page) == [(7, "Overfitting from epoch 7: first.")]

    page = watched().page
    page.goto(f"{idle_lab.url}/runs/{run_id}")
    wait_result(page)
    # Today's events: one finding since epoch 7, its sentence updated at 8 and 9.
    _send(page, {"epoch": 7, "insight_since": 7, "insight": "Overfitting from epoch 7: a."},
          {"epoch": 8, "insight_since": 7, "insight": "Overfitting since epoch 7: b."},
          {"epoch": 9, "insight_since": 7, "insight": "Overfitting since epoch 7: c."})
    assert _overfitting_notes(page) == [(7, "Overfitting since epoch 7: c.")]


@pytest.fixture(scope="module")
def camera_browser(browser):
    """Chromium with a fake camera that needs no permission prompt (one Playwright per
    thread: launched through the module's browser's)."""
    chromium = browser.browser_type.launch(
        executable_path=pages.CHROMIUM,
        args=["--no-sandbox", "--use-fake-device-for-media-stream",
              "--use-fake-ui-for-media-stream"])
    yield chromium
    chromium.close()


def test_a_photo_from_the_camera_gets_a_prediction(idle_lab, camera_browser):
    idle_lab.finished_run()
    w = pages.Watched(camera_browser)
    try:
        w.context.grant_permissions(["camera"], origin=idle_lab.url)
        page = w.page
        page.goto(idle_lab.url + "/predict")
        page.click("#camera-open")
        page.wait_for_function("document.getElementById('camera-video').videoWidth > 0",
                               timeout=30_000)
        page.click("#camera-snap")
        page.wait_for_selector(".result .verdict", timeout=120_000)
        assert page.locator(".result figcaption").last.inner_text() == "camera.jpg"
        assert not page.locator("#camera").is_visible()  # closed, the stream stopped
        assert page.evaluate("document.getElementById('camera-video').srcObject") is None
    finally:
        w.close()


def test_a_pasted_photo_and_two_models_side_by_side(idle_lab, watched):
    first = idle_lab.finished_run()
    second = idle_lab.launch({**TINY, "epochs": 1})
    idle_lab.wait_status(second, "succeeded")
    page = watched().page
    page.goto(idle_lab.url + "/predict")
    jpeg = base64.b64encode(photo_bytes("cat", size=96, seed=11)).decode()
    paste = """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'image.png', { type: 'image/jpeg' }));
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt })); }"""
    page.evaluate(paste, jpeg)
    page.wait_for_selector(".result .verdict", timeout=120_000)
    assert page.locator(".result").count() == 1
    assert page.locator(".result figcaption").last.inner_text() == "pasted-1.jpeg"

    page.select_option("#model", first)
    page.select_option("#second-model", second)
    page.evaluate(paste, jpeg)
    page.wait_for_selector(".result-pair", timeout=120_000)
    pair = page.locator(".result-pair").first
    assert pair.locator(".result .verdict").count() == 2
    assert [pair.locator(".model-name").nth(i).inner_text().split(" ")[1]
            for i in range(2)] == [first, second]
    pages.shot(page, "predict-side-by-side")
    # Text pasted into the page is not a photo: nothing is sent.
    page.evaluate("""() => { const dt = new DataTransfer(); dt.setData('text/plain', 'hello');
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt })); }""")
    assert page.locator(".result").count() == 3
