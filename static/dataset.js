// Dataset tab: the interactive bar chart of photos per class (counts come from the page).
(function () {
  "use strict";
  const el = document.getElementById("ds-counts");
  if (!el || !window.Plotly) return;
  const d = el.dataset;
  const counts = [Number(d.dogs), Number(d.cats)];
  const total = counts[0] + counts[1] || 1;
  Plotly.newPlot(el, [{
    type: "bar", x: ["dog", "cat"], y: counts,
    marker: { color: [d.dogColour, d.catColour] },
    text: counts.map((n) => n.toLocaleString()), textposition: "outside", cliponaxis: false,
    customdata: counts.map((n) => (100 * n / total).toFixed(1) + " %"),
    hovertemplate: "%{x}: %{y:,} photos (%{customdata})<extra></extra>",
  }], {
    margin: { l: 60, r: 16, t: 24, b: 50 }, font: { size: 15 },
    xaxis: { title: { text: "class (label 0 = dog, 1 = cat)" } },
    yaxis: { title: { text: "photos" }, rangemode: "tozero" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fbfaf7",
  }, { responsive: true, displaylogo: false });
})();
