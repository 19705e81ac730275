// Predict tab: send dropped or picked photos to /api/predict and show each verdict.
(function () {
  "use strict";
  const { $, mb } = Lab;
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
    detail.textContent = "probability of cat: " + result.cat_probability.toFixed(3) +
      " · " + result.format + " " + result.width + "×" + result.height;
    el.append(img, verdict, bar, detail);
    for (const text of result.notes || []) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = "Note: " + text + ".";
      el.append(note);
    }
    el.append(name);
    return el;
  }

  const form = $("predict-form");
  const maxFiles = Number(form.dataset.maxFiles), maxBytes = Number(form.dataset.maxBytes);
  const showError = (message) => Lab.showError("predict-error", message, "predict-status");

  async function send(files) {
    if (!files.length) return;
    $("predict-error").hidden = true;
    // Said before uploading anything: the server would refuse these anyway (413).
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (files.length > maxFiles) {
      return showError("that is " + files.length + " photos; send at most " + maxFiles +
                       " at a time.");
    }
    if (total > maxBytes) {
      return showError("these photos add up to " + mb(total) + "; the lab takes at most " +
                       mb(maxBytes) + " at a time. Send fewer or smaller photos.");
    }
    $("predict-status").textContent = "Looking at " + files.length + " photo" +
      (files.length > 1 ? "s" : "") + "…";
    const body = new FormData();
    body.append("model", $("model").value);
    for (const f of files) body.append("photos", f, f.name);
    try {
      const resp = await Lab.post("/api/predict", { body: body });
      let answer;
      try { answer = await resp.json(); } catch (err) { answer = {}; }
      if (!answer.results) {
        throw new Error(answer.error || "the lab could not read these photos (" + resp.status + ")");
      }
      // Newest batch first, each batch in the order the photos were given.
      const batch = document.createDocumentFragment();
      answer.results.forEach((r, i) => batch.append(card(r, files[i])));
      results.prepend(batch);
      $("predict-status").textContent = "Model " + answer.model.run_id + " (" + answer.model.recipe + ")";
    } catch (err) {
      showError(err.message);
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
