// Polls a batch job's status endpoint and updates the progress panel until the job is finished.
(function () {
  "use strict";

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

    window.statusPoll(url, show);
  }

  document.querySelectorAll("#batch-progress[data-status-url]").forEach(function (panel) {
    if (panel.dataset.terminal !== "true") {
      start(panel);
    }
  });
})();
