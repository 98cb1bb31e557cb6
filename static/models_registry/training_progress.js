// Polls a training run's status endpoint and updates the progress panel until the run is finished.
(function () {
  "use strict";

  var INTERVAL_MS = 1000;
  var MAX_INTERVAL_MS = 15000;

  function start(panel) {
    var url = panel.dataset.statusUrl;
    var bar = panel.querySelector("[data-progress-bar]");
    var percent = panel.querySelector("[data-progress-percent]");
    var status = panel.querySelector("[data-status]");
    var message = panel.querySelector("[data-progress-message]");
    var error = panel.querySelector("[data-error]");
    var result = panel.querySelector("[data-result]");
    // The run's facts sit in a panel of their own, below the progress panel.
    var duration = document.querySelector("[data-duration]");
    var attempts = document.querySelector("[data-attempts]");
    var delay = INTERVAL_MS;

    function show(data) {
      bar.value = data.progress;
      bar.textContent = data.progress + "%";
      percent.textContent = data.progress + "%";
      status.textContent = data.status_label;
      status.className = "badge status-" + data.status;
      message.textContent = data.progress_message || "";
      if (duration && data.duration) {
        duration.textContent = data.duration;
      }
      if (attempts) {
        attempts.textContent = data.attempts;
      }
      if (data.error_message) {
        error.textContent = data.error_message;
        error.hidden = false;
      }
      if (data.version_url) {
        var link = document.createElement("a");
        link.href = data.version_url;
        link.textContent = "Open " + data.version_label;
        result.replaceChildren(link);
        result.hidden = false;
      }
      panel.dataset.runStatus = data.status;
    }

    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (data) {
          delay = INTERVAL_MS;
          show(data);
          if (!data.is_terminal) {
            window.setTimeout(poll, delay);
          }
        })
        .catch(function () {
          // The server may be restarting: keep trying, less and less often.
          delay = Math.min(delay * 2, MAX_INTERVAL_MS);
          window.setTimeout(poll, delay);
        });
    }

    window.setTimeout(poll, INTERVAL_MS);
  }

  document.querySelectorAll("[data-status-url]").forEach(function (panel) {
    if (panel.dataset.terminal !== "true") {
      start(panel);
    }
  });
})();
