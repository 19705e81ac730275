// Overlay the epoch curves of several runs. A finished run carries its per-epoch history in
// its summary (GET /api/runs/<id> → summary.history); only runs without one (still running,
// or from before the history was kept) are read from their epoch events, page by page.
(function () {
  "use strict";
  const api = (runId) => "/api/runs/" + encodeURIComponent(runId);

  async function fromEvents(runId) {
    let after = 0, rows = [];
    for (;;) {
      const resp = await fetch(api(runId) + "/events?after=" + after);
      const body = await resp.json();
      rows = rows.concat(body.events.filter((e) => e.type === "epoch"));
      if (!body.more) return rows;
      after = body.last_seq;
    }
  }

  async function epochs(runId) {
    try {
      const resp = await fetch(api(runId));
      if (resp.ok) {
        const run = await resp.json();
        const history = run.summary && run.summary.history;
        if (Array.isArray(history) && history.length) return history;
      }
    } catch (err) { /* read the events instead */ }
    return fromEvents(runId);
  }

  async function draw() {
    const rows = Array.from(document.querySelectorAll(".cmp-run"));
    const acc = [], loss = [];
    await Promise.all(rows.map(async (row, i) => {
      const eps = await epochs(row.dataset.runId);
      const color = Lab.palette[i % Lab.palette.length];
      const base = { mode: "lines+markers", name: row.dataset.label,
                     line: { color: color, width: 2 }, x: eps.map((e) => e.epoch) };
      acc[i] = Object.assign({}, base, { y: eps.map((e) => e.val_accuracy) });
      loss[i] = Object.assign({}, base, { y: eps.map((e) => e.val_loss) });
    }));
    // Epochs count from 1 here: no batch points start at 0 as on a run's page. Runs with no
    // epochs yet leave the axes at their fixed empty ranges; with points, x and loss fit them.
    const any = acc.some((t) => t.x.length);
    const xaxis = () => any ? { title: { text: "epoch" } } : Lab.epochAxis(1);
    const lossAxis = Lab.lossAxis("validation loss");
    if (any) { delete lossAxis.range; lossAxis.autorange = true; }
    Plotly.newPlot("cmp-acc", acc, Lab.layout("validation accuracy", {
      xaxis: xaxis(), yaxis: Lab.accuracyAxis("validation accuracy") }), Lab.plotConfig);
    Plotly.newPlot("cmp-loss", loss, Lab.layout("validation loss", {
      xaxis: xaxis(), yaxis: lossAxis }), Lab.plotConfig);
  }
  draw();
})();
