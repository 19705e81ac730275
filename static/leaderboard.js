// The leaderboard page (templates/leaderboard.html): each person's best run, kept fresh
// from GET /api/leaderboard.
(function () {
  "use strict";
  const { $ } = Lab;
  const page = $("leaderboard-page");
  if (!page) return;
  const table = page.querySelector("table.leaderboard");
  Lab.poll("/api/leaderboard", (data) => {
    $("board-empty").hidden = data.entries.length > 0;
    $("board-card").hidden = data.entries.length === 0;
    LabBoard.fillBoard(table, data.entries);
    $("board-updated").textContent = "Updates by itself as runs finish.";
  }, "board-error");
})();
