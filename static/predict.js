// Predict tab: send dropped or picked photos to /api/predict and show each verdict.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const drop = $("dropzone"), input = $("photos"), results = $("results");

  function card(result, file) {
    const el = document.createElement("figure");
    el.className = "card result" + (result.error ? " error" : "");
    el.style.margin = "0";
    const name = document.createElement("figcaption");
    name.className = "muted small";
    name.textContent = result.filename;
    if (result.error) {
      const msg = document.createElement("p");
      msg.textContent = result.error;
      el.append(name, msg);
      return el;
    }
    const img = document.createElement("img");
    img.src = result.heatmap;
    img.alt = "Grad-CAM heat-map over " + result.filename;
    img.className = "heatmap";
    const verdict = document.createElement("div");
    verdict.className = "verdict";
    verdict.textContent = (result.label === "cat" ? "🐱 Cat" : "🐶 Dog") + " · " +
      (100 * result.confidence).toFixed(1) + " %";
    const bar = document.createElement("div");
    bar.className = "confidence";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuenow", (100 * result.confidence).toFixed(0));
    bar.setAttribute("aria-label", "confidence");
    const fill = document.createElement("div");
    fill.className = result.label;
    fill.style.width = (100 * result.confidence).toFixed(1) + "%";
    bar.append(fill);
    const detail = document.createElement("p");
    detail.className = "muted small";
    detail.textContent = "probability of cat: " + result.cat_probability.toFixed(3);
    el.append(img, verdict, bar, detail, name);
    return el;
  }

  async function send(files) {
    if (!files.length) return;
    $("predict-error").hidden = true;
    $("predict-status").textContent = "Looking at " + files.length + " photo" +
      (files.length > 1 ? "s" : "") + "…";
    const form = new FormData();
    form.append("model", $("model").value);
    for (const f of files) form.append("photos", f, f.name);
    try {
      const resp = await fetch("/api/predict", { method: "POST", body: form });
      let body;
      try { body = await resp.json(); } catch (err) { body = {}; }
      if (!body.results) {
        throw new Error(body.error || "the lab could not read these photos (" + resp.status + ")");
      }
      // Newest batch first, each batch in the order the photos were given.
      const batch = document.createDocumentFragment();
      body.results.forEach((r, i) => batch.append(card(r, files[i])));
      results.prepend(batch);
      $("predict-status").textContent = "Model " + body.model.run_id + " (" + body.model.recipe + ")";
    } catch (err) {
      $("predict-status").textContent = "";
      $("predict-error").textContent = err.message.charAt(0).toUpperCase() + err.message.slice(1);
      $("predict-error").hidden = false;
    }
  }

  input.addEventListener("change", () => { send(Array.from(input.files)); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => send(Array.from(e.dataTransfer.files)));
})();
