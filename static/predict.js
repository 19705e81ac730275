// Predict tab: send dropped or picked photos to /api/predict and show each verdict.
(function () {
  "use strict";
  const { $, mb } = Lab;
  const drop = $("dropzone"), input = $("photos"), results = $("results");
  const clear = $("clear-results");

  // A cat's or a dog's face drawn as SVG: emoji need a font many lab machines lack (the dog
  // drew as an empty box).
  const FACES = {
    cat: "M5 10 L4 3 L9 7 Q12 6 15 7 L20 3 L19 10 Q20 18 12 20 Q4 18 5 10 Z",
    dog: "M6 7 Q2 6 3 13 L6 12 Q6 19 12 20 Q18 19 18 12 L21 13 Q22 6 18 7 Q12 3 6 7 Z",
  };
  function face(label) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", "icon");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", FACES[label]);
    path.setAttribute("fill", "currentColor");
    svg.append(path);
    return svg;
  }

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
    verdict.className = "verdict " + result.label;
    verdict.append(face(result.label), (result.label === "cat" ? "Cat" : "Dog") + " · " +
      (100 * result.confidence).toFixed(1) + " % sure");
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
      clear.hidden = false;
      $("predict-status").textContent = "Model " + answer.model.run_id + " (" + answer.model.recipe + ")";
    } catch (err) {
      showError(err.message);
    }
  }

  // The drop zone is a button: a click, Enter or Space opens the file chooser.
  drop.addEventListener("click", () => input.click());
  clear.addEventListener("click", () => {
    results.replaceChildren();
    $("predict-status").textContent = "";
    $("predict-error").hidden = true;
    clear.hidden = true;
    drop.focus();
  });
  input.addEventListener("change", () => { send(Array.from(input.files)); input.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => send(Array.from(e.dataTransfer.files)));
})();
