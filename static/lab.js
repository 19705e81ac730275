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

  // A log learning-rate axis whose ticks read as numbers: 1e-4, 3e-4, 0.001, 0.003...
  // (Plotly's own log ticks read "5, 2, 1e-3, 5, 2" with minus signs of its own).
  const rateTicks = [];
  for (let exp = -7; exp <= 0; exp++) {
    for (const lead of [1, 3]) {
      const v = lead * Math.pow(10, exp);
      if (v <= 1) rateTicks.push(v);
    }
  }
  const rateText = (v) => (v >= 1e-3 ? String(Number(v.toPrecision(1))) : v.toExponential(0));
  function rateAxis(title, rate) {
    // Before any point: a decade either side of the run's starting rate (or 1e-5...0.1).
    const centre = rate > 0 ? Math.log10(rate) : -3;
    return { title: { text: title }, type: "log", tickmode: "array", tickvals: rateTicks,
             ticktext: rateTicks.map(rateText), range: [centre - 1.2, centre + 0.6] };
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

  // A learning rate as a plain number, two significant digits: 0.002, 0.00035, 1e-7.
  const rate = (v) => String(Number(Number(v).toPrecision(2)));

  // Progressive resizing's first epochs, for any page that names a run's settings.
  const smallEpochs = (epochs, px) => "the first " + (epochs === 1 ? "epoch" : epochs +
    " epochs") + " at " + px + " px";

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

  window.Lab = Object.freeze({ $: $, showError: showError, mb: mb, rate: rate, colours: colours, post: post,
                               palette: palette, plotConfig: plotConfig, layout: layout,
                               accuracyAxis: accuracyAxis, lossAxis: lossAxis, epochAxis: epochAxis,
                               rateAxis: rateAxis, smallEpochs: smallEpochs });
})();
