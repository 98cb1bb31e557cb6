// Polls a training run's status endpoint and updates the progress panel until the run is finished; then
// reloads the page once, which shows the final state with the run's results (metrics, charts, version).
(function () {
  "use strict";

  function start(panel) {
    var url = panel.dataset.statusUrl;
    var message = panel.querySelector("[data-progress-message]");
    var result = panel.querySelector("[data-result]");
    // The run's facts sit in a panel of their own, below the progress panel.
    var duration = document.querySelector("[data-duration]");
    var attempts = document.querySelector("[data-attempts]");

    function show(data) {
      if (data.status !== panel.dataset.runStatus) {
        // "Run 5 was submitted" went with the state the page opened in: stale once the status moved on.
        document.querySelectorAll(".message.run-submitted").forEach(function (flash) {
          flash.remove();
        });
      }
      window.showProgress(panel, data);
      message.textContent = data.progress_message || "";
      if (duration && data.duration) {
        duration.textContent = data.duration;
      }
      if (attempts) {
        attempts.textContent = data.attempts;
      }
      if (data.version_url) {
        var link = document.createElement("a");
        link.href = data.version_url;
        link.textContent = "Open " + data.version_label;
        result.replaceChildren(link);
        result.hidden = false;
      }
      panel.dataset.runStatus = data.status;
      if (data.is_terminal) {
        // Once: the page drawn now is final (no polling) and shows the results; the flash was used up by
        // the first load, so it does not come back.
        window.location.reload();
      }
    }

    window.statusPoll(url, show);
  }

  document.querySelectorAll("[data-status-url]").forEach(function (panel) {
    if (panel.dataset.terminal !== "true") {
      start(panel);
    }
  });
})();
