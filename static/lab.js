// What every page script shares: loaded by base.html before any of them, as window.Lab.
// Plotly itself is loaded later, by the pages that draw charts; nothing here touches it.
// The one thing it does by itself: in projector mode, the page's links keep projector mode.
(function () {
  "use strict";
  const dog = "#2f6db5", cat = "#d9622b";
  // The chart colours, the same as lab.css's --dog, --cat, --muted and --bad.
  const colours = {
    dog: dog, cat: cat,
    train: cat, val: dog,                                    // run page: train vs validation
    batch: "rgba(217, 98, 43, 0.35)", batchAcc: "rgba(47, 109, 181, 0.35)",  // running means
    lr: "#5d6472", cut: "#c0392b",                           // learning rate, its cuts, early stop
  };
  // One colour a run where several are overlaid (compare page).
  const palette = [cat, dog, "#2e8b57", "#8e44ad", "#b7791f", colours.cut, "#16a085", colours.lr];

  // No "Share chart..." (it uploads to Plotly's cloud from a local lab), no Chart Studio
  // link, no logo: the mode bar keeps zoom, pan and the PNG download.
  const plotConfig = { responsive: true, displaylogo: false, showSendToCloud: false,
                       showEditInChartStudio: false, showLink: false,
                       modeBarButtonsToRemove: ["lasso2d", "select2d", "sendChartToCloud"] };

  // Chart text big enough for the back of a room on a projector (?present=1 sets the
  // body's "present" class) or a wide screen; the normal size elsewhere.
  const bigScreen = () => document.body.classList.contains("present") ||
    window.innerWidth >= 1600;
  const fontSize = () => (bigScreen() ? 22 : 14);

  // Fixed axes for charts that may have no points yet (Plotly's empty default spans
  // -1...6, which reads as accuracies of -100 %...400 %).
  const accuracyAxis = (title) => ({ title: { text: title }, tickformat: ".0%",
                                     range: [0, 1.02], autorange: false, zeroline: false });
  const lossAxis = (title) => ({ title: { text: title }, rangemode: "tozero", zeroline: false,
                                 range: [0, 1], autorange: false });
  // An epoch axis from 0 to the planned epochs until points arrive.
  const epochAxis = (epochs) => ({ title: { text: "epoch" }, zeroline: false,
                                   range: [0, Math.max(1, epochs || 1)], autorange: false });

  // A log learning-rate axis whose ticks read as the rates do elsewhere (rate below):
  // 3e-5, 0.0001, 0.0003, 0.001... (Plotly's own log ticks read "5, 2, 1e-3, 5, 2" with
  // minus signs of its own).
  const rateTicks = [];
  for (let exp = -7; exp <= 0; exp++) {
    for (const lead of [1, 3]) {
      const v = lead * Math.pow(10, exp);
      if (v <= 1) rateTicks.push(v);
    }
  }
  function rateAxis(title, start) {
    // Before any point: a decade either side of the run's starting rate (or 1e-5...0.1).
    const centre = start > 0 ? Math.log10(start) : -3;
    return { title: { text: title }, type: "log", tickmode: "array", tickvals: rateTicks,
             ticktext: rateTicks.map(rate), range: [centre - 1.2, centre + 0.6] };
  }

  // The base layout of every chart: an epoch x axis unless `extra` says otherwise
  // (top-level keys of `extra` replace the base's, as Object.assign does). The legend sits
  // above the plot, so on a phone its wrapped rows never run into the axis titles.
  function layout(yTitle, extra) {
    const size = fontSize();
    return Object.assign({
      margin: { l: 4.5 * size, r: 16, t: 16, b: 3.6 * size }, font: { size: size },
      xaxis: { title: { text: "epoch" }, rangemode: "tozero", zeroline: false },
      yaxis: { title: { text: yTitle } },
      legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" },
      shapes: [], annotations: [],
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fbfaf7",
    }, extra || {});
  }

  const $ = (id) => document.getElementById(id);

  // Show a message in an error box (an id or the element), first letter capitalised, and
  // blank the status line it replaces, if any (e.g. "Looking at 2 photos…").
  function showError(box, message, statusLine) {
    const el = typeof box === "string" ? $(box) : box;
    const text = String(message || "something went wrong");
    if (statusLine) {
      const status = typeof statusLine === "string" ? $(statusLine) : statusLine;
      if (status) status.textContent = "";
    }
    el.textContent = text.charAt(0).toUpperCase() + text.slice(1);
    el.hidden = false;
  }

  // -- formatters: one per quantity, so every page writes it the same way (and as the
  // server's template filters, dashboard/filters.py, do where a page shows both) -----------

  // A share (0-1) as a percentage, "–" when unknown: 78.0 %, or 78 % with digits 0.
  const pct = (v, digits) => (v === null || v === undefined) ? "–"
    : (100 * v).toFixed(digits === undefined ? 1 : digits) + " %";

  // A learning rate as a plain number, two significant digits: 0.002, 0.00035; under 1e-4
  // with an exponent, as the server's filter switches (3e-5, 1e-7), which also keeps the
  // rate axis's ticks short. "–" when unknown.
  function rate(v) {
    if (v === null || v === undefined) return "–";
    const n = Number(Number(v).toPrecision(2));
    return n === 0 || Math.abs(n) >= 1e-4 ? String(n) : n.toExponential();
  }

  // A duration as the server's duration filter writes it: 1 h 02 min, 3 min 05 s, 42 s.
  function duration(seconds) {
    if (!isFinite(seconds) || seconds < 0) return "–";
    const s = Math.round(seconds), m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h) return h + " h " + String(m % 60).padStart(2, "0") + " min";
    if (m) return m + " min " + String(s % 60).padStart(2, "0") + " s";
    return s + " s";
  }

  // A count of things: "1 photo", "3 photos".
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");

  // Bytes as MB of 1,048,576 bytes, as the server counts its limits (MAX_CONTENT_LENGTH // 2**20).
  const mb = (bytes) => (bytes / 1048576).toFixed(1) + " MB";
  // Memory in MiB, as ml/device.py reports it, as GB: 139.8 GB.
  const gb = (mib) => (mib / 1024).toFixed(1) + " GB";

  // Progressive resizing's first epochs, for any page that names a run's settings.
  const smallEpochs = (epochs, px) => "the first " + (epochs === 1 ? "epoch" : epochs +
    " epochs") + " at " + px + " px";

  // A run's settings in one line (the API's run rows: home, queue, leaderboard):
  // "fast_cnn · 64 px · rate 0.001 · 10 epochs · batch 32".
  function settingsText(s) {
    const size = (s.image_px || "–") + " px" +
      (s.small_image_px ? " (" + smallEpochs(s.small_epochs, s.small_image_px) + ")" : "");
    const parts = [s.recipe, size, "rate " + rate(s.learning_rate),
                   plural(s.epochs, "epoch"), "batch " + s.batch_size];
    if (s.schedule && s.schedule !== "plateau") parts.push(s.schedule.replace("_", "-"));
    if (s.augment === false) parts.push("no augmentation");
    return parts.join(" · ");
  }

  // A progress bar or meter at a share (0-1): the bar's width, the meter's aria-valuenow.
  function setBar(bar, meter, share) {
    bar.style.width = (100 * share).toFixed(1) + "%";
    meter.setAttribute("aria-valuenow", (100 * share).toFixed(0));
  }

  // -- elements and links ----------------------------------------------------------------

  // An element with its text set as text: names people typed are never read as markup.
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // Projector mode (?present=1, base.html): links keep it, so the room's screen stays big.
  // The page's own links are rewritten here, once; link() makes new ones the same way.
  const present = document.body.classList.contains("present");
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
  function link(href, text, className) {
    const a = el("a", className, text);
    a.href = present ? href + (href.includes("?") ? "&" : "?") + "present=1" : href;
    return a;
  }

  // -- keeping a page fresh --------------------------------------------------------------

  // Fetch JSON from url every POLL_MS while the page is visible and render it when it
  // changed (the API answers 304 when it has not); errorBox (an id) says when it could not.
  // Returns a function that fetches at once, for a page that knows the answer has changed.
  const POLL_MS = 4000;
  function poll(url, render, errorBox) {
    let last = null, timer = null;
    async function tick(now) {
      if (now || !document.hidden) {
        try {
          const resp = await fetch(url, { headers: { Accept: "application/json" } });
          const text = await resp.text();
          if (!resp.ok) throw new Error(JSON.parse(text).error || resp.statusText);
          if (text !== last) { last = text; render(JSON.parse(text)); }
          if (errorBox) $(errorBox).hidden = true;
        } catch (err) {
          if (errorBox) showError(errorBox, "could not update: " + err.message +
                                            " (trying again in a few seconds)");
        }
      }
      clearTimeout(timer);  // one loop, however many fetches at once were asked for
      timer = setTimeout(() => tick(false), POLL_MS);
    }
    tick(true);
    return () => tick(true);
  }

  // One run's events, stored then live (dashboard/live.py), on one Socket.IO connection a
  // page (made on first use; the page loads the socket.io bundle). `join` {run_id, after}
  // sends the stored events after `after` as run_event messages, then the live ones; after a
  // reconnect it joins again after the last event had, so none is missed or handled twice.
  // onEvent(ev) gets each of this run's events once, in order. opts: onJoin(reply) after
  // each join's replay ({ok: true, queue_position} or {ok: false, error}); onDisconnect();
  // on: {name: handler} for the room's other messages (queue_position).
  // Returns {leave()}: stop watching (the page follows another run).
  let socket = null;
  function watchRun(runId, onEvent, opts) {
    opts = opts || {};
    const conn = socket || (socket = io({ transports: ["websocket", "polling"] }));
    let lastSeq = 0, watching = true;
    const join = () => conn.emit("join", { run_id: runId, after: lastSeq }, (reply) => {
      if (watching && opts.onJoin) opts.onJoin(reply || {});
    });
    const listeners = Object.assign({}, opts.on, {
      connect: join,
      disconnect: () => { if (opts.onDisconnect) opts.onDisconnect(); },
      run_event: (ev) => {
        // Another run's (one connection), or one a replay already gave.
        if (ev.run_id !== runId || ev.seq <= lastSeq) return;
        lastSeq = ev.seq;
        onEvent(ev);
      },
    });
    for (const [name, fn] of Object.entries(listeners)) conn.on(name, fn);
    if (conn.connected) join();  // else the connect listener joins
    return {
      leave() {
        if (!watching) return;
        watching = false;
        for (const [name, fn] of Object.entries(listeners)) conn.off(name, fn);
        // A dropped connection has left every room already.
        if (conn.connected) conn.emit("leave", { run_id: runId });
      },
    };
  }

  // fetch() for a request that changes something: sends the page's token (the server
  // refuses a browser's POST without it, so other sites' pages cannot make one).
  function post(url, options) {
    const token = document.querySelector('meta[name="csrf-token"]');
    const headers = Object.assign({}, (options || {}).headers,
                                  token ? { "X-CSRF-Token": token.content } : {});
    return fetch(url, Object.assign({}, options, { method: "POST", headers: headers }));
  }

  window.Lab = Object.freeze({
    $: $, el: el, link: link, present: present, showError: showError, post: post,
    poll: poll, watchRun: watchRun, setBar: setBar,
    pct: pct, rate: rate, duration: duration, plural: plural, mb: mb, gb: gb,
    smallEpochs: smallEpochs, settingsText: settingsText,
    colours: colours, palette: palette, plotConfig: plotConfig, layout: layout,
    accuracyAxis: accuracyAxis, lossAxis: lossAxis, epochAxis: epochAxis, rateAxis: rateAxis });
})();
