// What every page script shares: loaded by base.html before any of them, as window.Lab.
// Plotly itself is loaded later, by the pages that draw charts; nothing here touches it.
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

  const plotConfig = { responsive: true, displaylogo: false,
                       modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  // The base layout of every chart: an epoch x axis unless `extra` says otherwise
  // (top-level keys of `extra` replace the base's, as Object.assign does).
  function layout(yTitle, extra) {
    return Object.assign({
      margin: { l: 60, r: 16, t: 28, b: 50 }, font: { size: 14 },
      xaxis: { title: { text: "epoch" }, rangemode: "tozero", zeroline: false },
      yaxis: { title: { text: yTitle } },
      legend: { orientation: "h", y: -0.3 }, shapes: [], annotations: [],
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

  // Bytes as MB of 1,048,576 bytes, as the server counts its limits (MAX_CONTENT_LENGTH // 2**20).
  const mb = (bytes) => (bytes / 1048576).toFixed(1) + " MB";

  // fetch() for a request that changes something: sends the page's token (the server
  // refuses a browser's POST without it, so other sites' pages cannot make one).
  function post(url, options) {
    const token = document.querySelector('meta[name="csrf-token"]');
    const headers = Object.assign({}, (options || {}).headers,
                                  token ? { "X-CSRF-Token": token.content } : {});
    return fetch(url, Object.assign({}, options, { method: "POST", headers: headers }));
  }

  window.Lab = Object.freeze({ $: $, showError: showError, mb: mb, colours: colours, post: post,
                               palette: palette, plotConfig: plotConfig, layout: layout });
})();
