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
      Lab.pct(result.confidence) + " sure");
    const bar = document.createElement("div");
    bar.className = "confidence";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", "confidence");
    const fill = document.createElement("div");
    fill.className = result.label;
    Lab.setBar(fill, bar, result.confidence);
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

  // One model's answer for these photos: {model, results} or a thrown Error with the
  // lab's sentence.
  async function judge(modelId, files) {
    const body = new FormData();
    body.append("model", modelId);
    for (const f of files) body.append("photos", f, f.name);
    const resp = await Lab.post("/api/predict", { body: body });
    let answer;
    try { answer = await resp.json(); } catch (err) { answer = {}; }
    if (!answer.results) {
      throw new Error(answer.error || "the lab could not read these photos (" + resp.status + ")");
    }
    return answer;
  }
  // The second picker offers the same models as the first (the page lists them once).
  const secondPicker = $("second-model");
  if (secondPicker) {
    for (const group of $("model").querySelectorAll("optgroup")) {
      const copy = group.cloneNode(true);
      for (const option of copy.querySelectorAll("option")) option.selected = false;
      secondPicker.append(copy);
    }
    secondPicker.value = "";
  }
  const modelName = (model) => "run " + model.run_id + " (" + model.recipe + ")";

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
    const second = $("second-model") ? $("second-model").value : "";
    const models = [$("model").value].concat(second && second !== $("model").value ? [second] : []);
    $("predict-status").textContent = "Looking at " + Lab.plural(files.length, "photo") +
      (models.length > 1 ? " with two models" : "") + "…";
    try {
      const answers = await Promise.all(models.map((id) => judge(id, files)));
      // Newest batch first, each batch in the order the photos were given; with two
      // models, each photo's two verdicts side by side.
      const batch = document.createDocumentFragment();
      files.forEach((file, i) => {
        if (answers.length === 1) { batch.append(card(answers[0].results[i], file)); return; }
        const pair = document.createElement("div");
        pair.className = "result-pair";
        for (const answer of answers) {
          const one = card(answer.results[i], file);
          const who = document.createElement("p");
          who.className = "model-name small";
          who.textContent = modelName(answer.model);
          one.prepend(who);
          pair.append(one);
        }
        batch.append(pair);
      });
      results.prepend(batch);
      clear.hidden = false;
      $("predict-status").textContent = "Model " + answers.map((a) => modelName(a.model))
        .join(" beside model ");
    } catch (err) {
      showError(err.message);
    }
  }

  // -- photos from the camera and the clipboard: each goes through send(), as an upload --
  const camera = $("camera"), video = $("camera-video");
  let stream = null;
  function closeCamera() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
    camera.hidden = true;
  }
  $("camera-open").addEventListener("click", async () => {
    if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
      $("camera-file").click();  // a phone's own camera app, through the file input
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (err) {
      // Refused, or no camera: the file input still offers the system camera on a phone.
      showError("the camera could not be opened (" + (err.name || "refused") + "); allow the " +
                "camera for this page, or pick a photo instead.");
      return;
    }
    video.srcObject = stream;
    camera.hidden = false;
    $("camera-snap").focus();
  });
  $("camera-close").addEventListener("click", closeCamera);
  $("camera-snap").addEventListener("click", () => {
    if (!video.videoWidth) return showError("the camera has not shown a picture yet; try again.");
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => {
      closeCamera();
      if (!blob) return showError("the camera picture could not be taken; try again.");
      send([new File([blob], "camera.jpg", { type: "image/jpeg" })]);
    }, "image/jpeg", 0.92);
  });
  $("camera-file").addEventListener("change", (e) => {
    send(Array.from(e.target.files));
    e.target.value = "";
  });
  document.addEventListener("paste", (e) => {
    const items = Array.from((e.clipboardData && e.clipboardData.items) || []);
    const files = items.filter((it) => it.kind === "file").map((it) => it.getAsFile())
      .filter(Boolean).map((f, i) => (f.name && f.name !== "image.png") ? f
        : new File([f], "pasted-" + (i + 1) + "." + ((f.type.split("/")[1] || "png")), { type: f.type }));
    if (!files.length) return;  // text pasted into a box: not ours
    e.preventDefault();
    send(files);
  });

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
