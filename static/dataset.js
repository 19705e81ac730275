// Dataset tab: the interactive bar chart of photos per class (counts come from the page).
(function () {
  "use strict";
  const el = Lab.$("ds-counts");
  if (!el || !window.Plotly) return;
  const d = el.dataset;
  const counts = [Number(d.dogs), Number(d.cats)];
  const total = counts[0] + counts[1] || 1;
  // The page passes the colours of the seaborn countplot beside this chart, so both match.
  const colours = [d.dogColour || Lab.colours.dog, d.catColour || Lab.colours.cat];
  Plotly.newPlot(el, [{
    type: "bar", x: ["dog", "cat"], y: counts,
    marker: { color: colours },
    text: counts.map((n) => n.toLocaleString()), textposition: "outside", cliponaxis: false,
    customdata: counts.map((n) => Lab.pct(n / total)),
    hovertemplate: "%{x}: %{y:,} photos (%{customdata})<extra></extra>",
  }], Lab.layout("photos", {
    font: { size: 15 },
    xaxis: { title: { text: "class (label 0 = dog, 1 = cat)" } },
    yaxis: { title: { text: "photos" }, rangemode: "tozero" },
  }), Lab.plotConfig);
})();
