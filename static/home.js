// The home page (templates/home.html): the live run, the queue and the top of the board,
// kept fresh from GET /api/home; the live run's chart follows its room (Lab.watchRun), as
// the run page does.
(function () {
  "use strict";
  const { $, el, link, layout, plotConfig, pct, plural, colours: C } = Lab;
  const home = $("home");
  if (!home) return;
  const live = { runId: null, epochs: null, steps: null, watch: null };
  const topTable = home.querySelector("table.leaderboard");

  function drawLiveChart() {
    Plotly.newPlot("live-chart", [
      { x: [], y: [], name: "training photos", mode: "lines+markers",
        line: { color: C.train, width: 3 }, marker: { size: 8 } },
      { x: [], y: [], name: "validation photos", mode: "lines+markers",
        line: { color: C.val, width: 3 }, marker: { size: 8 } },
    ], layout("accuracy", { font: LabBoard.chartFont, margin: { l: 80, r: 16, t: 36, b: 50 },
                            // The legend above the plot: below, it runs into the axis title.
                            legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom" },
                            yaxis: { title: { text: "accuracy" }, tickformat: ".0%",
                                     range: [0, 1.05], tickvals: [0, 0.25, 0.5, 0.75, 1] },
                            // Whole epochs only (see the epoch handler).
                            xaxis: { title: { text: "epoch" }, rangemode: "tozero",
                                     dtick: 1 } }),
    Object.assign({}, plotConfig, { displayModeBar: false }));
  }
  function setDone(done) {
    done = Math.max(0, Math.min(1, done));
    Lab.setBar($("live-bar"), home.querySelector(".progress"), done);
    $("live-done").textContent = pct(done, 0);
  }
  function onEvent(ev) {
    if (ev.type === "run_started") {
      live.epochs = ev.epochs; live.steps = ev.steps_per_epoch;
      $("live-epoch").textContent = "0 / " + ev.epochs;
    } else if (ev.type === "batch" && live.epochs) {
      $("live-epoch").textContent = ev.epoch + " / " + live.epochs;
      setDone(((ev.epoch - 1) * ev.steps + ev.step) / (live.epochs * ev.steps));
    } else if (ev.type === "epoch") {
      Plotly.extendTraces("live-chart", { x: [[ev.epoch], [ev.epoch]],
                                          y: [[ev.accuracy], [ev.val_accuracy]] }, [0, 1]);
      if (live.epochs) setDone(ev.epoch / live.epochs);
      // About eight whole-epoch ticks however long the run gets, never 0.5 or 1.5.
      Plotly.relayout("live-chart", { "xaxis.dtick": Math.max(1, Math.ceil(ev.epoch / 8)) });
    } else if (ev.type === "checkpoint") {
      $("live-best").textContent = pct(ev.val_accuracy);
    } else if (ev.type === "run_finished") {
      $("live-status").textContent = ev.status;
      $("live-status").className = "badge " + ev.status;
      $("live-text").textContent = "finished";
      refresh();  // the next live run, and the board with this one on it
    }
  }
  function liveState(on, text) {
    $("live-dot").className = "live-dot" + (on ? " on" : "");
    $("live-text").textContent = text;
  }
  function unfollow() {
    if (live.watch) live.watch.leave();
    live.watch = null;
    live.runId = null;
  }
  function follow(run) {
    unfollow();
    Object.assign(live, { runId: run.run_id, epochs: run.epochs, steps: null });
    drawLiveChart();
    setDone(0);
    $("live-epoch").textContent = "–";
    $("live-best").textContent = pct(run.best_val_accuracy);
    $("live-status").textContent = "running";
    $("live-status").className = "badge running";
    live.watch = Lab.watchRun(run.run_id, onEvent, {
      onJoin: (reply) => (reply.ok ? liveState(true, "live")
                                   : liveState(false, reply.error || "not connected")),
      onDisconnect: () => liveState(false, "reconnecting…"),
    });
  }

  function renderQueue(queue) {
    $("queue-count").textContent = queue.waiting ? "· " + queue.waiting + " waiting" : "";
    $("queue-empty").hidden = queue.waiting > 0;
    $("queue-paused").hidden = !queue.paused;
    const list = $("queue-list");
    list.replaceChildren();
    for (const run of queue.next) {
      const item = el("li");
      item.append(el("span", "queue-place", "#" + run.queue_position));
      const who = el("span", run.named ? "name" : "name noname");
      who.append(link(run.url, run.name));
      item.append(who);
      item.append(el("span", "muted small queue-what", Lab.settingsText(run)));
      list.append(item);
    }
    const more = queue.waiting - queue.next.length;
    $("queue-more").hidden = more <= 0;
    $("queue-more").textContent = "and " + plural(more, "more run") + " after these.";
  }

  function render(data) {
    const empty = { no_runs: ["No runs yet",
                              "Nobody has trained a model yet: be the first (Train, below)."],
                    all_failed: ["Every run so far has failed",
                                 "Open the latest one to see why, then try other settings."] };
    const state = empty[data.empty];
    $("home-empty").hidden = !state;
    if (state) {
      $("home-empty-title").textContent = state[0];
      const text = $("home-empty-text");
      text.textContent = state[1] + " ";
      if (data.last_failed_url) text.append(link(data.last_failed_url, "The latest failed run"));
    }
    if (data.live) {
      $("live-none").hidden = true;
      $("live-run").hidden = false;
      // "Ada's run"; a run whose owner gave no name: "A run (no name)".
      $("live-name").textContent = data.live.named ? data.live.name : "A run";
      $("live-suffix").textContent = data.live.named ? "’s run" : " (no name)";
      $("live-link").href = link(data.live.url, "").href;
      $("live-settings").textContent = Lab.settingsText(data.live);
      const others = data.running - 1;
      $("live-others").hidden = others <= 0;
      $("live-others").textContent = others > 0 ? "and " + plural(others, "more run") +
        " training at the same time (see Runs)." : "";
      if (data.live.run_id !== live.runId) follow(data.live);
    } else {
      $("live-run").hidden = true;
      $("live-none").hidden = false;
      $("live-none-hint").textContent = data.queue.waiting
        ? "The next run starts as soon as a worker is free."
        : "Start one from Train: it shows here, live.";
      unfollow();
    }
    renderQueue(data.queue);
    $("top-empty").hidden = data.top.length > 0;
    LabBoard.fillBoard(topTable, data.top);
  }
  // One poll loop; a finished live run asks for the next state at once.
  const refresh = Lab.poll("/api/home", render, "home-error");
})();
