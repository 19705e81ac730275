// The run page's panel (templates/_run_panel.html): the run's fixed validation photos as the
// network judged them after each epoch ("panel" events), that epoch's confusion matrix
// ("epoch" events), and plain sentences for overfitting, rate cuts and early stopping.
// run.js hands every event, live or replayed, over as a "lab:run-event" DOM event, so a
// replayed run draws what a live viewer saw.
(function () {
  "use strict";
  const { $, pct } = Lab;
  const card = $("panel-card");
  if (!card) return;
  const panels = new Map();      // epoch -> items
  const confusions = new Map();  // epoch -> [[dog→dog, dog→cat], [cat→dog, cat→cat]]
  const notes = new Map();       // "kind:epoch" (or "insight") -> its <li>: a replay adds each once
  const slider = $("panel-slider");
  let following = true;          // the slider keeps to the newest epoch until moved back
  let figures = [];

  const thumb = (rel) => "/photos/thumb/" + rel.split("/").map(encodeURIComponent).join("/");

  function build(items) {
    const grid = $("panel-grid");
    grid.replaceChildren();
    figures = items.map((item) => {
      const fig = document.createElement("figure");
      fig.className = "panel-photo";
      const img = document.createElement("img");
      img.src = thumb(item.image);
      img.alt = (item.label === 1 ? "a cat" : "a dog") + " (" + item.image + ")";
      img.loading = "lazy";
      const mark = document.createElement("span");
      mark.className = "wrong-mark";
      mark.textContent = "✗";
      mark.setAttribute("aria-hidden", "true");
      mark.hidden = true;
      const bar = document.createElement("div");
      bar.className = "confidence";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      const needle = document.createElement("span");
      needle.className = "needle";
      bar.append(needle);
      const caption = document.createElement("figcaption");
      fig.append(img, mark, bar, caption);
      grid.append(fig);
      return { fig, mark, bar, needle, caption, image: item.image };
    });
  }

  function show(epoch) {
    const items = panels.get(epoch);
    if (!items) return;
    if (figures.length !== items.length || figures.some((f, i) => f.image !== items[i].image)) {
      build(items);
    }
    items.forEach((item, i) => {
      const f = figures[i];
      const p = item.cat_probability;
      const said = p >= 0.5 ? "cat" : "dog";
      const truth = item.label === 1 ? "cat" : "dog";
      const wrong = said !== truth;
      f.fig.classList.toggle("wrong", wrong);
      f.mark.hidden = !wrong;
      f.needle.style.left = (100 * p).toFixed(1) + "%";
      f.bar.setAttribute("aria-valuenow", String(Math.round(100 * p)));
      f.bar.setAttribute("aria-label", "cat probability " + pct(p, 0));
      f.caption.textContent = "is a " + truth + " · said " + said + ", " +
        pct(said === "cat" ? p : 1 - p, 0) + " sure";
    });
    slider.value = String(epoch);
    $("panel-epoch-out").textContent = String(epoch);
    $("panel-epoch-label").textContent = "· after epoch " + epoch;
    const wrong = items.filter((it) => (it.cat_probability >= 0.5) !== (it.label === 1)).length;
    $("panel-epoch-label").textContent += " · " + wrong + " of " + items.length + " wrong";
    showConfusion(epoch);
  }

  function showConfusion(epoch) {
    const cm = confusions.get(epoch);
    const box = $("panel-confusion");
    box.hidden = !cm;
    if (!cm) return;
    for (const t of [0, 1]) for (const g of [0, 1]) $("cm-" + t + "-" + g).textContent = cm[t][g];
    const n = cm[0][0] + cm[0][1] + cm[1][0] + cm[1][1];
    $("confusion-epoch").textContent = String(epoch);
    $("confusion-accuracy").textContent = n ? pct((cm[0][0] + cm[1][1]) / n, 0) : "–";
  }

  // One entry per key, under the epoch it began; `update` rewrites an existing one's text.
  function note(key, epoch, text, update = false) {
    const had = notes.get(key);
    if (had) {
      if (update) had.textContent = text;
      return;
    }
    const li = document.createElement("li");
    li.dataset.epoch = String(epoch);
    li.textContent = text;
    notes.set(key, li);
    $("run-notes").append(li);
    $("notes-card").hidden = false;
  }

  slider.addEventListener("input", () => {
    const epoch = Number(slider.value);
    following = epoch === Number(slider.max);
    $("panel-follow").textContent = following ? "following the run" : "";
    show(epoch);
  });

  let runSize = null;  // the run's image size: validation and the kept model use it
  const handlers = {
    run_started(ev) { runSize = ev.image_size; },
    panel(ev) {
      panels.set(ev.epoch, ev.items);
      card.hidden = false;
      slider.max = String(Math.max(...panels.keys()));
      if (following) show(ev.epoch);
    },
    epoch(ev) {
      if (ev.confusion) confusions.set(ev.epoch, ev.confusion);
      // The run's overfitting is one finding: later epochs update it (insight_since, the
      // epoch it began). Runs stored before insight_since said each repeat as if it began
      // anew: the first is kept.
      if (ev.insight) {
        const since = typeof ev.insight_since === "number" ? ev.insight_since : null;
        note("insight", since === null ? ev.epoch : since, ev.insight, since !== null);
      }
      if (runSize && ev.image_size && ev.image_size < runSize) {
        note("small", ev.epoch, "Epoch " + ev.epoch + ": training starts on small " +
          ev.image_size + " px photos. They have " +
          pct((ev.image_size / runSize) ** 2, 0) + " of the pixels of " + runSize +
          " px ones, so these epochs go faster; the network is still checked on " + runSize +
          " px photos, the size it will be used at.");
      } else if (runSize && ev.image_size === runSize && notes.has("small")) {
        note("full", ev.epoch, "Epoch " + ev.epoch + ": the training photos grow to the full " +
          runSize + " px for the last epochs, to learn the finer detail; the curves may " +
          "jump here as the network gets used to them.");
      }
      if (panels.has(ev.epoch) && Number(slider.value) === ev.epoch) showConfusion(ev.epoch);
    },
    lr_reduced(ev) {
      note("lr:" + ev.epoch, ev.epoch, "Epoch " + ev.epoch + ": the learning rate was cut from " +
        Lab.rate(ev.old_lr) + " to " + Lab.rate(ev.new_lr) + ". Validation loss had stopped " +
        "getting better, so the network now takes smaller steps to settle.");
    },
    early_stopped(ev) {
      note("stop:" + ev.epoch, ev.epoch, "Epoch " + ev.epoch + ": early stopping. Validation " +
        "accuracy had not improved for a while, so training stopped rather than memorise " +
        "the training photos" + (ev.best_epoch ? "; the best epoch, " + ev.best_epoch +
        ", is the one kept." : "."));
    },
  };
  document.addEventListener("lab:run-event", (e) => {
    const handle = handlers[e.detail.type];
    if (handle) handle(e.detail);
  });
})();
