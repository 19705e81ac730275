// What the class learned (templates/class.html): every finished run's settings against its
// accuracy, as parallel coordinates and as one setting at a time, kept fresh from
// GET /api/class. People's names are escaped before Plotly, which reads a few tags in its text.
(function () {
  "use strict";
  const { $, layout, plotConfig, pct, rate, present, colours: C } = Lab;
  if (!$("class-page")) return;
  const chartFont = LabBoard.chartFont;
  // For Plotly's text, which reads <b>, <br>, <a>…: a name is shown as typed, never as markup.
  const plotText = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  // Accuracy from poor (the cat colour) to good (green, lab.css's --ok).
  const accuracyScale = [[0, C.cat], [0.5, "#e8d27a"], [1, "#2e8b57"]];
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
  Lab.poll("/api/class", (data) => {
    rows = data.runs;
    $("class-empty").hidden = rows.length > 0;
    $("class-charts").hidden = rows.length === 0;
    if (!rows.length) return;
    $("class-count").textContent = "· " + Lab.plural(rows.length, "run");
    drawParcoords();
    drawScatter();
    if (!$("class-scatter").dataset.clicks) {
      $("class-scatter").dataset.clicks = "1";
      $("class-scatter").on("plotly_click", (ev) => {
        const point = ev.points && ev.points[0];
        if (point && point.customdata) location.href = Lab.link(point.customdata, "").href;
      });
    }
  }, "class-error");
  $("class-setting").addEventListener("change", () => { if (rows.length) drawScatter(); });
})();
