// Dataset tab without a dataset: start the download on a worker and show its progress live.
(function () {
  "use strict";
  const { $, mb, pct } = Lab;
  const box = $("download");
  if (!box) return;
  const stateUrl = box.dataset.stateUrl;
  let timer = null;

  const showError = (message) => Lab.showError("download-error", message);
  function render(s) {
    const active = s && (s.state === "queued" || s.state === "running");
    $("download-start").hidden = active;
    $("download-cancel").hidden = !active;
    $("download-progress").hidden = !s || !s.state;
    if (!s || !s.state) return;
    const done = s.done || 0, total = s.total || 0;
    const share = total ? Math.min(1, done / total) : 0;
    Lab.setBar($("download-bar"), box.querySelector(".progress"), share);
    const words = {
      queued: "Waiting for a worker…",
      running: total ? "Downloading: " + mb(done) + " of " + mb(total) + " (" + pct(share, 0) + ")"
                     : "Downloading: " + mb(done) + "…",
      succeeded: "Done: " + (s.summary ? s.summary.total + " photos unpacked." : "unpacked.") +
                 " Loading them…",
      cancelled: "The download was cancelled.",
      failed: "The download failed.",
    };
    $("download-text").textContent = words[s.state] || s.state;
    if (s.state === "failed" && s.error) showError(s.error);
    if (s.state === "succeeded") { stop(); setTimeout(() => window.location.reload(), 800); }
    if (!active && s.state !== "succeeded") stop();
  }
  function stop() { if (timer) { clearInterval(timer); timer = null; } }
  async function poll() {
    try {
      const resp = await fetch(stateUrl);
      render(await resp.json());
    } catch (err) { /* the next tick tries again */ }
  }
  function follow() { stop(); poll(); timer = setInterval(poll, 1000); }

  $("download-start").addEventListener("click", async () => {
    $("download-error").hidden = true;
    $("download-start").disabled = true;
    try {
      const resp = await Lab.post(stateUrl, { headers: { "Content-Type": "application/json" },
                                             body: "{}" });
      const body = await resp.json();
      if (!resp.ok) showError(body.error || "the download could not start");
      else follow();
    } catch (err) {
      showError("the lab did not answer; try again");
    } finally {
      $("download-start").disabled = false;
    }
  });
  $("download-cancel").addEventListener("click", async () => {
    await Lab.post(stateUrl + "/cancel");
    poll();
  });
  // A download started elsewhere (another browser, make data) shows up here too.
  fetch(stateUrl).then((r) => r.json()).then((s) => {
    render(s);
    if (s && (s.state === "queued" || s.state === "running")) follow();
  }).catch(() => {});
})();
