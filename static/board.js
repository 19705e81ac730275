// The class's views (templates/home.html, leaderboard.html, class.html) and projector mode.
// Loaded by base.html on every page, after the page's own scripts: each part below runs only
// where its root element is. Names of people are always set with textContent, and escaped
// before Plotly (which reads a few tags in its text) sees them.
(function () {
  "use strict";
  const { $, layout, plotConfig, colours: C } = Lab;
  const present = document.body.classList.contains("present");
  const POLL_MS = 4000;  // the board and the queue: a small JSON, 304 when unchanged

  // -- projector mode: links keep ?present=1, so the room's screen stays big ---------------
  if (present) {
    for (const a of document.querySelectorAll("a[href]")) {
      if (a.id === "present-exit" || a.classList.contains("present-link")) continue;
      const url = new URL(a.href, location.href);
      if (url.origin !== location.origin || url.pathname.startsWith("/api/") ||
          url.pathname.endsWith(".keras") || a.hasAttribute("download")) continue;
      url.searchParams.set("present", "1");
      a.href = url.pathname + url.search + url.hash;
    }
  }

  const pct = (v, digits) => (v === null || v === undefined) ? "–"
    : (100 * v).toFixed(digits === undefined ? 1 : digits) + " %";
  // A learning rate as a plain number, as the server's filter writes it: 0.001, 0.0003, 1e-07.
  const rate = (r) => (r === null || r === undefined) ? "–" : String(Number(Number(r).toPrecision(3)));
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  // For Plotly's text, which reads <b>, <br>, <a>…: a name is shown as typed, never as markup.
  const plotText = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  // Bigger chart text on a projector.
  const chartFont = present ? { size: 22, color: "#000" } : { size: 14 };
  // Accuracy from poor (the cat colour) to good (green, lab.css's --ok).
  const accuracyScale = [[0, C.cat], [0.5, "#e8d27a"], [1, "#2e8b57"]];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function link(href, text, className) {
    const a = el("a", className, text);
    a.href = present ? href + (href.includes("?") ? "&" : "?") + "present=1" : href;
    return a;
  }
  function settingsText(s) {
    const size = (s.image_px || "–") + " px" +
      (s.small_image_px ? " (" + Lab.smallEpochs(s.small_epochs, s.small_image_px) + ")" : "");
    const parts = [s.recipe, size, "rate " + rate(s.learning_rate),
                   plural(s.epochs, "epoch"), "batch " + s.batch_size];
    if (s.schedule && s.schedule !== "plateau") parts.push(s.schedule.replace("_", "-"));
    if (s.augment === false) parts.push("no augmentation");
    return parts.join(" · ");
  }

  // Fetch JSON every POLL_MS while the page is visible; render only what changed.
  function poll(url, render, errorBox) {
    let last = null;
    async function tick() {
      if (!document.hidden) {
        try {
          const resp = await fetch(url, { headers: { Accept: "application/json" } });
          const text = await resp.text();
          if (!resp.ok) throw new Error(JSON.parse(text).error || resp.statusText);
          if (text !== last) { last = text; render(JSON.parse(text)); }
          if (errorBox) $(errorBox).hidden = true;
        } catch (err) {
          if (errorBox) Lab.showError(errorBox, "could not update: " + err.message +
                                                " (trying again in a few seconds)");
        }
      }
      setTimeout(tick, POLL_MS);
    }
    tick();
  }

  // -- the leaderboard's table (the leaderboard page, and its top on the home page) --------
  function fillBoard(table, entries) {
    const body = table.querySelector("tbody");
    const before = new Map([...body.rows].map((r) => [r.dataset.name + "|" + r.dataset.runId, r]));
    body.replaceChildren();
    for (const e of entries) {
      const row = el("tr", e.mine ? "mine" : "");
      row.dataset.runId = e.run_id;
      row.dataset.name = e.name;
      row.append(el("td", "num rank", e.rank));
      const who = el("td", "who");
      who.append(el("span", e.named ? "name" : "name noname", e.name));
      if (e.mine) who.append(el("span", "you", " (you)"));
      row.append(who);
      const acc = el("td", "num acc");
      acc.append(el("b", null, pct(e.accuracy)));
      acc.append(el("span", "photos", e.val_photos ? "on " + plural(e.val_photos, "photo")
                                                   : "photos not recorded"));
      row.append(acc);
      row.append(el("td", "settings hide-narrow", settingsText(e)));
      const open = el("td");
      open.append(link(e.url, "open run"));
      row.append(open);
      if (before.size && !before.has(e.name + "|" + e.run_id)) row.classList.add("changed");
      body.append(row);
    }
    table.hidden = entries.length === 0;
  }

  const boardPage = $("leaderboard-page");
  if (boardPage) {
    const table = boardPage.querySelector("table.leaderboard");
    poll("/api/leaderboard", (data) => {
      $("board-empty").hidden = data.entries.length > 0;
      $("board-card").hidden = data.entries.length === 0;
      fillBoard(table, data.entries);
      $("board-updated").textContent = "Updates by itself as runs finish.";
    }, "board-error");
  }

  // -- the home page: the live run, the queue, the top of the board ------------------------
  const home = $("home");
  if (home) {
    const live = { runId: null, lastSeq: 0, epochs: null, steps: null, socket: null };
    const topTable = home.querySelector("table.leaderboard");

    function drawLiveChart() {
      Plotly.newPlot("live-chart", [
        { x: [], y: [], name: "training photos", mode: "lines+markers",
          line: { color: C.train, width: 3 }, marker: { size: 8 } },
        { x: [], y: [], name: "validation photos", mode: "lines+markers",
          line: { color: C.val, width: 3 }, marker: { size: 8 } },
      ], layout("accuracy", { font: chartFont, margin: { l: 80, r: 16, t: 36, b: 50 },
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
      $("live-bar").style.width = (100 * done).toFixed(1) + "%";
      home.querySelector(".progress").setAttribute("aria-valuenow", (100 * done).toFixed(0));
      $("live-done").textContent = pct(done, 0);
    }
    function onEvent(ev) {
      if (ev.run_id !== live.runId || ev.seq <= live.lastSeq) return;
      live.lastSeq = ev.seq;
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
        refreshHome();  // the next live run, and the board with this one on it
      }
    }
    function liveState(on, text) {
      $("live-dot").className = "live-dot" + (on ? " on" : "");
      $("live-text").textContent = text;
    }
    function join() {
      live.socket.emit("join", { run_id: live.runId, after: live.lastSeq }, (reply) => {
        if (reply && reply.ok) liveState(true, "live");
        else liveState(false, (reply && reply.error) || "not connected");
      });
    }
    function follow(run) {
      if (live.socket && live.runId) live.socket.emit("leave", { run_id: live.runId });
      Object.assign(live, { runId: run.run_id, lastSeq: 0, epochs: run.epochs, steps: null });
      drawLiveChart();
      setDone(0);
      $("live-epoch").textContent = "–";
      $("live-best").textContent = pct(run.best_val_accuracy);
      $("live-status").textContent = "running";
      $("live-status").className = "badge running";
      if (!live.socket) {
        live.socket = io({ transports: ["websocket", "polling"] });
        live.socket.on("connect", () => { if (live.runId) join(); });
        live.socket.on("disconnect", () => liveState(false, "reconnecting…"));
        live.socket.on("run_event", onEvent);
      } else if (live.socket.connected) {
        join();
      }
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
        item.append(el("span", "muted small queue-what", settingsText(run)));
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
        $("live-settings").textContent = settingsText(data.live);
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
        if (live.socket && live.runId) live.socket.emit("leave", { run_id: live.runId });
        live.runId = null;
      }
      renderQueue(data.queue);
      $("top-empty").hidden = data.top.length > 0;
      fillBoard(topTable, data.top);
    }
    let refreshHome = () => {};
    // One poll loop; a finished live run asks for the next state at once.
    (function () {
      async function once() {
        try {
          const resp = await fetch("/api/home", { headers: { Accept: "application/json" } });
          const body = await resp.json();
          if (!resp.ok) throw new Error(body.error || resp.statusText);
          render(body);
          $("home-error").hidden = true;
        } catch (err) {
          Lab.showError("home-error", "could not update: " + err.message +
                                      " (trying again in a few seconds)");
        }
      }
      refreshHome = once;
      once();
      setInterval(() => { if (!document.hidden) once(); }, POLL_MS);
    })();
  }

  // -- what the class learned: parallel coordinates and one setting against accuracy ---------
  const classPage = $("class-page");
  if (classPage) {
    const labels = { recipe: "recipe", learning_rate: "learning rate", batch_size: "batch size",
                     image_px: "image size (px)", epochs: "epochs", augment: "augmentation",
                     schedule: "schedule", label_smoothing: "label smoothing" };
    const CATEGORICAL = new Set(["recipe", "schedule", "augment"]);
    const shown = (key, v) => key === "augment" ? (v ? "on" : "off")
      : (v === null || v === undefined) ? "–" : String(v);
    let rows = [];

    // Learning rates are plotted as log10, labelled with the rates themselves.
    function rateAxis(values) {
      const rates = [...new Set(values.filter((v) => v > 0))].sort((a, b) => a - b);
      const decades = [];
      const lo = Math.floor(Math.log10(rates[0])), hi = Math.ceil(Math.log10(rates[rates.length - 1]));
      for (let d = lo; d <= hi; d++) decades.push(Math.pow(10, d));
      const ticks = rates.length <= 6 ? rates : decades;
      return { tickvals: ticks.map(Math.log10), ticktext: ticks.map(rate) };
    }
    // A few distinct settings (batch 8 and 16, 1 or 2 epochs): ticks at those values only,
    // not at 9, 10, 11… or 1.2, 1.4…
    function numberTicks(values) {
      const distinct = [...new Set(values)].sort((a, b) => a - b);
      return distinct.length <= 8 ? { tickvals: distinct, ticktext: distinct.map(String) } : {};
    }
    function categories(key) {
      return [...new Set(rows.map((r) => shown(key, r[key])))].sort();
    }
    function dimension(key) {
      const values = rows.map((r) => r[key]);
      if (key === "learning_rate") {
        const logs = values.map((v) => Math.log10(v));
        const dim = Object.assign({ label: labels[key], values: logs }, rateAxis(values));
        // One rate for every run: an axis around it (Plotly draws none for a zero range).
        if (Math.min(...logs) === Math.max(...logs)) dim.range = [logs[0] - 1, logs[0] + 1];
        return dim;
      }
      if (CATEGORICAL.has(key)) {
        const cats = categories(key);
        return { label: labels[key], values: values.map((v) => cats.indexOf(shown(key, v))),
                 tickvals: cats.map((_, i) => i), ticktext: cats,
                 range: cats.length === 1 ? [-1, 1] : [0, cats.length - 1] };
      }
      const nums = values.map((v) => (v === null || v === undefined) ? 0 : v);
      const dim = Object.assign({ label: labels[key], values: nums }, numberTicks(nums));
      if (Math.min(...nums) === Math.max(...nums)) dim.range = [nums[0] - 1, nums[0] + 1];
      return dim;
    }
    function drawParcoords() {
      const acc = rows.map((r) => r.accuracy);
      const dims = Object.keys(labels).map(dimension);
      dims.push({ label: "accuracy", values: acc, tickformat: ".0%",
                  range: [Math.min(0.5, ...acc), 1] });
      Plotly.react("class-parcoords", [{
        type: "parcoords", dimensions: dims,
        line: { color: acc, colorscale: accuracyScale,
                cmin: Math.min(0.5, ...acc), cmax: 1, showscale: false },
        labelangle: -20, labelside: "top",
        labelfont: { size: present ? 22 : 14 }, tickfont: { size: present ? 18 : 12 },
      }], { font: chartFont, margin: { l: 70, r: 60, t: present ? 110 : 80, b: 30 },
            paper_bgcolor: "rgba(0,0,0,0)" }, Object.assign({}, plotConfig, { displayModeBar: false }));
    }
    function drawScatter() {
      const key = $("class-setting").value;
      const xaxis = { title: { text: labels[key] } };
      let xs = rows.map((r) => r[key]);
      if (key === "learning_rate") {
        Object.assign(xaxis, rateAxis(xs), { tickmode: "array" });
        xs = xs.map((v) => Math.log10(v));
      } else if (CATEGORICAL.has(key)) {
        xs = xs.map((v) => shown(key, v));
        Object.assign(xaxis, { type: "category", categoryorder: "category ascending" });
      } else {
        Object.assign(xaxis, numberTicks(xs), { tickmode: numberTicks(xs).tickvals ? "array" : "auto" });
      }
      const text = rows.map((r) => plotText(r.name) + "<br>" + pct(r.accuracy) + " · " +
                                   labels[key] + " " + (key === "learning_rate" ? rate(r[key])
                                                                                : shown(key, r[key])));
      Plotly.react("class-scatter", [{
        type: "scatter", mode: "markers", x: xs, y: rows.map((r) => r.accuracy),
        customdata: rows.map((r) => r.url), text: text, hoverinfo: "text",
        marker: { size: present ? 20 : 13, color: rows.map((r) => r.accuracy), opacity: 0.85,
                  colorscale: accuracyScale,
                  cmin: Math.min(0.5, ...rows.map((r) => r.accuracy)), cmax: 1,
                  line: { color: "#1f2430", width: 1 } },
      }], layout("best validation accuracy", {
        font: chartFont, xaxis: xaxis, showlegend: false,
        yaxis: { title: { text: "best validation accuracy" }, tickformat: ".0%",
                 range: [Math.min(0.45, ...rows.map((r) => r.accuracy - 0.05)), 1.02] },
      }), plotConfig);
    }
    poll("/api/class", (data) => {
      rows = data.runs;
      $("class-empty").hidden = rows.length > 0;
      $("class-charts").hidden = rows.length === 0;
      if (!rows.length) return;
      $("class-count").textContent = "· " + plural(rows.length, "run");
      drawParcoords();
      drawScatter();
      if (!$("class-scatter").dataset.clicks) {
        $("class-scatter").dataset.clicks = "1";
        $("class-scatter").on("plotly_click", (ev) => {
          const point = ev.points && ev.points[0];
          if (point && point.customdata) location.href = link(point.customdata, "").href;
        });
      }
    }, "class-error");
    $("class-setting").addEventListener("change", () => { if (rows.length) drawScatter(); });
  }
})();
