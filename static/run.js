// The run page: draws the run's stored events, then the live ones (Lab.watchRun). The same
// code replays a finished run. Events are described in ml/events.py.
(function () {
  "use strict";
  const { $, layout, plotConfig, colours: C } = Lab;
  const root = $("run");
  const runId = root.dataset.runId;
  const active = (status) => ["queued", "running"].includes(status);
  const initiallyActive = active(root.dataset.status);
  const line = (name, color, extra) => Object.assign(
    { x: [], y: [], name: name, mode: "lines", line: { color: color, width: 2 } }, extra || {});
  const points = (name, color) => line(name, color, { mode: "lines+markers",
                                                      marker: { size: 8 } });

  // Fixed axes until the first points come (a queued run's charts are empty), then each
  // fits its points; accuracy always spans 0-100 %.
  const startRate = Number(root.dataset.learningRate);
  const xEmpty = () => Lab.epochAxis(Number(root.dataset.epochs));
  Plotly.newPlot("loss-chart", [
    line("training loss (so far this epoch)", C.batch),
    points("training loss (end of epoch)", C.train),
    points("validation loss", C.val),
  ], layout("loss", { xaxis: xEmpty(), yaxis: Lab.lossAxis("loss") }), plotConfig);
  Plotly.newPlot("acc-chart", [
    line("training accuracy (so far this epoch)", C.batchAcc),
    points("training accuracy (end of epoch)", C.train),
    points("validation accuracy", C.val),
  ], layout("accuracy", { xaxis: xEmpty(), yaxis: Lab.accuracyAxis("accuracy") }), plotConfig);
  Plotly.newPlot("lr-chart", [
    line("learning rate", C.lr, { line: { color: C.lr, width: 3 } }),
    { x: [], y: [], name: "reduction", mode: "markers", text: [],
      marker: { symbol: "triangle-down", size: 14, color: C.cut }, hoverinfo: "text" },
  ], layout("learning rate", { xaxis: xEmpty(),
                               yaxis: Lab.rateAxis("learning rate", startRate) }), plotConfig);
  // Once points are drawn: x and loss fit them (once); the rate axis spans its points'
  // decades, redone as reductions lower the rate.
  let fitted = false;
  function fitAxes(newRates) {
    if (!fitted) {
      fitted = true;
      for (const chart of ["loss-chart", "acc-chart", "lr-chart"]) {
        Plotly.relayout(chart, { "xaxis.autorange": true, "xaxis.rangemode": "tozero" });
      }
      Plotly.relayout("loss-chart", { "yaxis.autorange": true });
    }
    if (newRates) {
      const rates = $("lr-chart").data.flatMap((t) => t.y).filter((v) => v > 0);
      const lo = Math.log10(Math.min(...rates)), hi = Math.log10(Math.max(...rates));
      Plotly.relayout("lr-chart", { "yaxis.range": [lo - 0.5, hi + 0.5] });
    }
  }

  // Points wait here and are drawn together once per animation frame.
  const pending = { "loss-chart": [[], [], []], "acc-chart": [[], [], []],
                    "lr-chart": [[], []] };
  const lrText = [];
  let frame = null;
  function push(chart, trace, x, y) {
    if (y === null || y === undefined) return;
    pending[chart][trace].push([x, y]);
    if (!frame) frame = requestAnimationFrame(flush);
  }
  function flush() {
    if (frame) cancelAnimationFrame(frame);
    frame = null;
    let drawn = false, newRates = false;
    for (const [chart, traces] of Object.entries(pending)) {
      const idx = [], xs = [], ys = [];
      traces.forEach((pts, i) => {
        if (pts.length) { idx.push(i); xs.push(pts.map((p) => p[0])); ys.push(pts.map((p) => p[1])); }
      });
      if (idx.length) {
        Plotly.extendTraces(chart, { x: xs, y: ys }, idx);
        drawn = true;
        newRates = newRates || chart === "lr-chart";
      }
      traces.forEach((pts) => { pts.length = 0; });
    }
    if (lrText.length) Plotly.restyle("lr-chart", { text: [lrText.slice()] }, [1]);
    if (drawn) fitAxes(newRates);
  }

  // Whether this run decoded the photos for everyone or read them ready (ml/photo_cache.py).
  function cacheText(cache) {
    if (!cache) return "";
    return cache.state === "built"
      ? " · decoded the photos once for every run (" + Math.round(Number(cache.seconds)) + " s)"
      : " · photos already decoded by an earlier run";
  }

  // What the run trains on (ml/device.py): "On NVIDIA H200 (139.8 GB)", "On AMD EPYC (2 cores)".
  function deviceText(device) {
    state.device = device;
    if (!device) return "";
    if (device.kind === "gpu" && device.gpus && device.gpus.length) {
      const gpu = device.gpus[0], count = device.gpus.length;
      return "On " + gpu.name + (count > 1 ? " (1 of " + count + ")" : "") + ", " +
        Lab.gb(gpu.memory_total_mb);
    }
    return "On " + device.name + (device.cores ? " (" + device.cores + " cores)" : "");
  }

  const state = { status: root.dataset.status, steps: null, epochs: Number(root.dataset.epochs),
                  startTs: null, best: null, schedule: "plateau" };
  function setStatus(status) {
    state.status = status;
    const badge = $("status");
    badge.textContent = status;
    badge.className = "badge " + status;
  }
  function setProgress(done, ts) {
    done = Math.max(0, Math.min(1, done));
    Lab.setBar($("progress-bar"), root.querySelector(".progress"), done);
    $("stat-progress").textContent = Lab.pct(done, 0);
    if (state.startTs && done > 0 && done < 1 && active(state.status)) {
      const elapsed = ts - state.startTs;
      $("stat-eta").textContent = Lab.duration(elapsed * (1 - done) / done);
    } else if (done >= 1 || !active(state.status)) {
      $("stat-eta").textContent = "–";
    }
  }
  function markAllCharts(x, label) {
    for (const chart of ["loss-chart", "acc-chart", "lr-chart"]) {
      const el = $(chart);
      const shapes = (el.layout.shapes || []).concat([{ type: "line", xref: "x", yref: "paper",
        x0: x, x1: x, y0: 0, y1: 1, line: { color: C.cut, width: 2, dash: "dash" } }]);
      // Inside the plot's top edge: above it is the legend's place.
      const annotations = (el.layout.annotations || []).concat([{ x: x, xref: "x", y: 1,
        yref: "paper", text: label, showarrow: false, yanchor: "top", xanchor: "right",
        bgcolor: "rgba(251, 250, 247, 0.85)", font: { color: C.cut } }]);
      Plotly.relayout(chart, { shapes: shapes, annotations: annotations });
    }
  }

  // Progressive resizing's first epochs (ml/train.py): a light band from epoch 0 to the
  // last small one, so the room sees where the photos grow to full size.
  function shadeSmallEpochs(untilEpoch, label) {
    for (const chart of ["loss-chart", "acc-chart", "lr-chart"]) {
      const el = $(chart);
      const shapes = (el.layout.shapes || []).concat([{ type: "rect", xref: "x", yref: "paper",
        x0: 0, x1: untilEpoch, y0: 0, y1: 1, layer: "below", line: { width: 0 },
        fillcolor: "rgba(93, 100, 114, 0.12)" }]);
      const annotations = (el.layout.annotations || []).concat([{ x: untilEpoch / 2,
        xref: "x", y: 0, yref: "paper", text: label, showarrow: false, yanchor: "bottom",
        font: { color: C.lr } }]);
      Plotly.relayout(chart, { shapes: shapes, annotations: annotations });
    }
  }

  const handlers = {
    run_started(ev) {
      state.steps = ev.steps_per_epoch; state.epochs = ev.epochs; state.startTs = ev.ts;
      state.schedule = ev.schedule || "plateau";  // runs from before schedules had none
      // A finished run's replay must not flash "running" on its badge.
      if (active(state.status)) setStatus("running");
      const extras = [];
      if (state.schedule !== "plateau") extras.push(state.schedule.replace("_", "-") + " schedule");
      if (ev.precision === "bfloat16" || ev.precision === "float16") {
        extras.push(ev.precision + " maths");
      }
      const small = ev.config && ev.config.small_epochs ? ev.config.small_image_size : null;
      const firstSmall = small ? " (" + Lab.smallEpochs(ev.config.small_epochs, small) + ")"
                               : "";
      $("phase").textContent = "Training on " + ev.train_count + " photos (" + ev.val_count +
        " for validation), " + ev.image_size + " px" + firstSmall +
        (extras.length ? ", " + extras.join(", ") : "") + ".";
      if (small) shadeSmallEpochs(ev.config.small_epochs, small + " px photos");
      $("device").textContent = deviceText(ev.device) + cacheText(ev.photo_cache);
      $("stat-epoch").textContent = "0 / " + ev.epochs;
      $("stat-lr").textContent = Lab.rate(ev.learning_rate);
    },
    batch(ev) {
      const x = ev.epoch - 1 + ev.step / ev.steps;
      push("loss-chart", 0, x, ev.loss);
      push("acc-chart", 0, x, ev.accuracy);
      $("stat-epoch").textContent = ev.epoch + " / " + state.epochs;
      $("stat-speed").textContent = Math.round(ev.images_per_s);
      if (state.schedule !== "plateau") {
        // A fixed schedule moves the rate every step: draw its curve, not epoch steps.
        push("lr-chart", 0, x, ev.lr);
        $("stat-lr").textContent = Lab.rate(ev.lr);
      }
      setProgress(((ev.epoch - 1) * ev.steps + ev.step) / (state.epochs * ev.steps), ev.ts);
    },
    epoch(ev) {
      if (ev.gpu) {
        $("device").textContent = deviceText(state.device) + " · GPU " + ev.gpu.utilisation_pct +
          " % busy, " + Lab.gb(ev.gpu.memory_used_mb) + " in use";
      }
      push("loss-chart", 1, ev.epoch, ev.loss);
      push("loss-chart", 2, ev.epoch, ev.val_loss);
      push("acc-chart", 1, ev.epoch, ev.accuracy);
      push("acc-chart", 2, ev.epoch, ev.val_accuracy);
      // The rate used during epoch k spans [k-1, k], so a reduction decided at the end of
      // epoch k shows as a step at x = k, where its marker is.
      if (state.schedule === "plateau") {
        push("lr-chart", 0, ev.epoch - 1, ev.lr);
        push("lr-chart", 0, ev.epoch, ev.lr);
        $("stat-lr").textContent = Lab.rate(ev.lr);
      }
      setProgress(ev.epoch / state.epochs, ev.ts);
    },
    checkpoint(ev) {
      state.best = ev.val_accuracy;
      $("stat-best").textContent = Lab.pct(ev.val_accuracy, 1);
    },
    lr_reduced(ev) {
      push("lr-chart", 1, ev.epoch, ev.new_lr);
      lrText.push("epoch " + ev.epoch + ": " + Lab.rate(ev.old_lr) + " → " + Lab.rate(ev.new_lr));
    },
    early_stopped(ev) {
      markAllCharts(ev.epoch, "early stop (best: epoch " + ev.best_epoch + ")");
    },
    run_finished(ev) {
      setStatus(ev.status);
      for (const id of ["cancel", "cancel-confirm", "unlock-to-cancel"]) {
        const el = $(id); if (el) el.hidden = true;
      }
      if (ev.status === "succeeded") setProgress(1, ev.ts);
      // Who cancelled, and whether it had started: "Cancelled by Ada before it started."
      const by = ev.cancelled_by ? "Cancelled by " + ev.cancelled_by : "Cancelled";
      const words = { succeeded: "Finished.",
                      cancelled: state.startTs ? by + ": the best epoch so far is kept."
                                               : by + " before it started.",
                      failed: "Failed: " + (ev.error || "see the worker's log") };
      $("phase").textContent = words[ev.status] || ev.status;
      $("stat-eta").textContent = "–";
      flush();  // every curve complete before the result shows under it
      // A run that ended while this page watched: its result is not on the page yet.
      if (initiallyActive) showResult();
    },
  };

  // The result section (confusion matrix, misclassified photos), rendered by the server as
  // GET /runs/<id>/result and swapped in for #run-result: no reload, so the charts, the
  // connection and anything else on the page stay. The worker writes the run's final status
  // and summary before it announces the end, so one fetch normally finds them; should this
  // process have heard of the end first (from the store poll), a few more tries do.
  let resultShown = false;
  async function showResult(triesLeft = 5) {
    if (resultShown) return;
    let next = null;
    try {
      const resp = await fetch("/runs/" + encodeURIComponent(runId) + "/result",
                               { cache: "no-store" });
      if (resp.ok) {
        const tpl = document.createElement("template");
        tpl.innerHTML = await resp.text();
        next = tpl.content.getElementById("run-result");
      }
    } catch (err) { /* tried again below */ }
    if (!next || active(next.dataset.status)) {
      if (triesLeft > 1) setTimeout(() => showResult(triesLeft - 1), 1000);
      return;
    }
    if (resultShown) return;
    resultShown = true;
    $("run-result").replaceWith(next);
    // The result gives the run's one speed, saying what it counts: the live one goes.
    if (next.querySelector("#summary")) $("stat-speed-box").hidden = true;
    const download = $("download");
    if (download && next.dataset.downloadUrl) {
      download.href = next.dataset.downloadUrl;
      download.hidden = false;
    }
    if (next.dataset.error) {
      const box = $("run-error");
      box.textContent = next.dataset.error;
      box.classList.toggle("error", next.dataset.status === "failed");
      box.hidden = false;
    }
  }

  function onEvent(ev) {
    const handle = handlers[ev.type];
    if (handle) handle(ev);
    // The page's other views of the run (static/panel.js) take the same events.
    document.dispatchEvent(new CustomEvent("lab:run-event", { detail: ev }));
  }

  function liveState(on, text) {
    $("live-dot").className = "live-dot" + (on ? " on" : "");
    $("live-text").textContent = text;
  }
  Lab.watchRun(runId, onEvent, {
    onJoin(reply) {
      if (reply.ok) {
        // The reply follows the replayed events: draw them now, so "replayed" means drawn.
        if (frame) flush();
        liveState(true, active(state.status) ? "live" : "replayed");
        // The place in line as it is now: any move missed while disconnected is made good.
        if (reply.queue_position) showPlace({ run_id: runId, queue_position: reply.queue_position });
      } else {
        liveState(false, "not connected");
        Lab.showError("live-error", reply.error || "Could not watch this run.");
      }
    },
    onDisconnect: () => liveState(false, "reconnecting…"),
    on: { queue_position: showPlace },
  });

  // While queued, the place in the queue: the server pushes {run_id, queue_position} to the
  // run's room whenever the queue changes (queue_position null once the run has left it).
  // The first place comes with the page.
  function showPlace(msg) {
    if (!msg || msg.run_id !== runId || state.status !== "queued") return;
    const place = msg.queue_position;
    if (place === null && state.cancelling) return;  // "Cancelled before it started." stays
    $("phase").textContent = Number.isInteger(place) && place > 0
      ? "Waiting in the queue: position " + place + "…"
      : "Out of the queue: starting…";
  }

  // Cancel asks first, in the page (one tap on a phone must not end someone's run).
  const cancel = $("cancel");
  if (cancel) {
    const confirmBox = $("cancel-confirm");
    cancel.addEventListener("click", () => {
      $("cancel-question").textContent = "Cancel " + cancel.dataset.whose + " run?";
      cancel.hidden = true;
      confirmBox.hidden = false;
      $("cancel-no").focus();
    });
    $("cancel-no").addEventListener("click", () => {
      confirmBox.hidden = true;
      cancel.hidden = false;
      cancel.focus();
    });
    $("cancel-yes").addEventListener("click", async () => {
      confirmBox.hidden = true;
      cancel.hidden = false;
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      try {
        const resp = await Lab.post("/api/runs/" + encodeURIComponent(runId) + "/cancel");
        const body = await resp.json();
        if (resp.ok) {
          state.cancelling = true;
          // The run's own end may have arrived first: it says who cancelled it; keep that.
          if (state.status !== "cancelled") {
            $("phase").textContent = body.outcome === "cancelled" ? "Cancelled before it started."
              : "Stopping at the next batch; the best epoch so far is kept…";
          }
        } else {
          Lab.showError("live-error", body.error || "Could not cancel this run.");
          cancel.disabled = false; cancel.textContent = "Cancel run";
        }
      } catch (err) {
        Lab.showError("live-error", "The lab did not answer; try again.");
        cancel.disabled = false; cancel.textContent = "Cancel run";
      }
    });
  }
})();
