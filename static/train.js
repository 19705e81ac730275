// Train form: choosing a recipe fills in the settings it was tuned with (epochs, schedule,
// label smoothing, weight decay), so "sprint_cnn" really is the 10-minute recipe without
// retyping.
(function () {
  "use strict";
  const form = Lab.$("train-form");
  if (!form) return;
  const note = Lab.$("recipe-note");
  const keys = { epochs: "epochs", schedule: "schedule", labelSmoothing: "label_smoothing",
                 weightDecay: "weight_decay" };
  form.querySelectorAll('input[name="recipe"]').forEach((radio) => {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
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
})();
