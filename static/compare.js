// Overlay the epoch curves of several runs, read from the events API.
(function () {
  "use strict";
  const palette = ["#d9622b", "#2f6db5", "#2e8b57", "#8e44ad", "#b7791f", "#c0392b",
                   "#16a085", "#5d6472"];
  const layout = (y, extra) => Object.assign({
    margin: { l: 60, r: 16, t: 28, b: 50 }, font: { size: 14 },
    xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: y } },
    legend: { orientation: "h", y: -0.3 }, paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fbfaf7" }, extra || {});
  const config = { responsive: true, displaylogo: false };

  async function epochs(runId) {
    let after = 0, rows = [];
    for (;;) {
      const resp = await fetch("/api/runs/" + encodeURIComponent(runId) + "/events?after=" + after);
      const body = await resp.json();
      rows = rows.concat(body.events.filter((e) => e.type === "epoch"));
      if (!body.more) return rows;
      after = body.last_seq;
    }
  }

  async function draw() {
    const rows = Array.from(document.querySelectorAll(".cmp-run"));
    const acc = [], loss = [];
    await Promise.all(rows.map(async (row, i) => {
      const eps = await epochs(row.dataset.runId);
      const color = palette[i % palette.length];
      const base = { mode: "lines+markers", name: row.dataset.label,
                     line: { color: color, width: 2 }, x: eps.map((e) => e.epoch) };
      acc[i] = Object.assign({}, base, { y: eps.map((e) => e.val_accuracy) });
      loss[i] = Object.assign({}, base, { y: eps.map((e) => e.val_loss) });
    }));
    Plotly.newPlot("cmp-acc", acc, layout("validation accuracy",
      { yaxis: { title: { text: "validation accuracy" }, tickformat: ".0%" } }), config);
    Plotly.newPlot("cmp-loss", loss, layout("validation loss"), config);
  }
  draw();
})();
