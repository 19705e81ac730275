// What the class's views (home.js, leaderboard.js, class.js) share and no other page needs,
// as window.LabBoard. Names of people are always set as text (Lab.el, Lab.link).
(function () {
  "use strict";
  const { el, link, pct, plural } = Lab;

  // Bigger, black chart text on a projector: the back of the room reads it.
  const chartFont = Lab.present ? { size: 22, color: "#000" } : { size: 14 };

  // The leaderboard's table (templates/_leaderboard_table.html: the leaderboard page, and its
  // top rows on the home page). A row that was not there before is marked "changed".
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
      row.append(el("td", "settings hide-narrow", Lab.settingsText(e)));
      const open = el("td");
      open.append(link(e.url, "open run"));
      row.append(open);
      if (before.size && !before.has(e.name + "|" + e.run_id)) row.classList.add("changed");
      body.append(row);
    }
    table.hidden = entries.length === 0;
  }

  window.LabBoard = Object.freeze({ chartFont: chartFont, fillBoard: fillBoard });
})();
