// Polls a batch job's status endpoint and updates the progress panel until the job is finished.
(function () {
  "use strict";

  var INTERVAL_MS = 1000;
  var MAX_INTERVAL_MS = 15000;

  function start(panel) {
    var url = panel.dataset.statusUrl;
    var bar = panel.querySelector("[data-progress-bar]");
    var percent = panel.querySelector("[data-progress-percent]");
    var status = panel.querySelector("[data-status]");
    var done = panel.querySelector("[data-rows-done]");
    var total = panel.querySelector("[data-rows-total]");
    var failed = panel.querySelector("[data-rows-failed]");
    var error = panel.querySelector("[data-error]");
    var downloads = panel.querySelector("[data-downloads]");
    var estimate = panel.querySelector("[data-estimate]");
    var started = document.querySelector("[data-started]");
    var finished = document.querySelector("[data-finished]");
    var attempts = document.querySelector("[data-attempts]");
    var delay = INTERVAL_MS;

    function show(data) {
      bar.value = data.progress;
      bar.textContent = data.progress + "%";
      percent.textContent = data.progress + "%";
      status.textContent = data.status_label;
      status.className = "badge status-" + data.status;
      done.textContent = data.rows_done;
      total.textContent = data.rows_total;
      failed.textContent = data.rows_failed;
      estimate.hidden = data.is_terminal;
      started.textContent = data.started_at || "—";
      finished.textContent = data.finished_at || "—";
      attempts.textContent = data.attempts;
      if (data.error_message) {
        error.textContent = data.error_message;
        error.hidden = false;
      }
      if (data.result_url) {
        panel.querySelector("[data-result-link]").href = data.result_url;
        panel.querySelector("[data-errors-link]").href = data.errors_url;
        downloads.hidden = false;
      }
      panel.dataset.jobStatus = data.status;
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

  document.querySelectorAll("#batch-progress[data-status-url]").forEach(function (panel) {
    if (panel.dataset.terminal !== "true") {
      start(panel);
    }
  });
})();
