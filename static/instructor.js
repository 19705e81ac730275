// The instructor's buttons (Runs tab, a run's page): each names its API route in
// data-lab-action; a click posts to it and reloads the page, which shows the new state.
(function () {
  "use strict";
  const errorBox = Lab.$("instructor-error");

  async function act(button) {
    button.disabled = true;
    try {
      const resp = await Lab.post(button.dataset.labAction);
      if (resp.ok) {
        window.location.reload();
        return;
      }
      const body = await resp.json().catch(() => ({}));
      Lab.showError(errorBox, body.error || "the server answered " + resp.status);
    } catch (err) {
      Lab.showError(errorBox, "the lab could not be reached: " + err.message);
    }
    button.disabled = false;
  }

  document.querySelectorAll("[data-lab-action]").forEach((button) => {
    button.addEventListener("click", () => act(button));
  });
})();
