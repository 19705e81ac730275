// Train form: choosing a recipe fills in the settings it was tuned with (epochs, schedule,
// label smoothing, weight decay, small images first), so "flash_cnn" really is the 5-minute
// recipe without retyping, and says the rate and size an empty box will mean. Before sending, a number box
// the browser could not read ("1e") is named: the browser would send it empty, which the
// server must take as "the recipe's" or "all photos".
(function () {
  "use strict";
  const form = Lab.$("train-form");
  if (!form) return;
  const note = Lab.$("recipe-note");
  const keys = { epochs: "epochs", schedule: "schedule", labelSmoothing: "label_smoothing",
                 weightDecay: "weight_decay", smallImageSize: "small_image_size",
                 smallEpochs: "small_epochs" };
  // What an empty box means, with the chosen recipe's number (as the server renders it).
  const blanks = { learning_rate: (r) => "the recipe's rate: " + r.dataset.learningRate,
                   image_size: (r) => "the recipe's size: " + r.dataset.imageSize + " px" };
  function showBlanks(radio) {
    for (const [name, text] of Object.entries(blanks)) {
      const box = form.elements[name], words = Lab.$("blank-" + name);
      if (box) box.placeholder = text(radio);
      if (words) words.textContent = text(radio);
    }
  }
  form.querySelectorAll('input[name="recipe"]').forEach((radio) => {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      showBlanks(radio);
      const changed = [];
      for (const [dataKey, name] of Object.entries(keys)) {
        const box = form.elements[name];
        const value = radio.dataset[dataKey];
        if (!box || value === undefined || box.value === value) continue;
        box.value = value;
        changed.push(box.labels && box.labels[0] ? box.labels[0].textContent.trim() : name);
      }
      note.textContent = changed.length
        ? radio.value + "'s settings: " + changed.join(", ").toLowerCase() + " updated."
        : "";
    });
  });

  const label = (box) => (box.labels && box.labels[0] ? box.labels[0].textContent.trim()
                                                      : box.name);
  function mark(box, message) {
    const field = box.closest(".field"), error = Lab.$("e-" + box.name);
    field.classList.toggle("invalid", Boolean(message));
    if (error) { error.textContent = message || ""; error.hidden = !message; }
  }
  form.addEventListener("submit", (e) => {
    const bad = [];
    form.querySelectorAll('input[type="number"]').forEach((box) => {
      const field = box.closest(".field");
      if (box.validity.badInput) {
        mark(box, "not a number: type digits only, such as 2000 or 0.001 (1e-3 works too)");
        field.dataset.badInput = "1";
        bad.push(box);
      } else if (field.dataset.badInput) {  // fixed since the last try: its mark goes
        mark(box, "");
        delete field.dataset.badInput;
      }
    });
    Lab.$("form-error").hidden = true;
    if (!bad.length) return;
    e.preventDefault();
    Lab.showError("form-error", (bad.length === 1 ? label(bad[0]) + " is not a number"
      : bad.map(label).join(", ") + " are not numbers") + ": fix the marked box" +
      (bad.length === 1 ? "" : "es") + " before starting.");
    bad[0].focus();
  });
})();
