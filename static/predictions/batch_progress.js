// Polls a batch job's status endpoint and updates the progress panel until the job is finished.
(function () {
  "use strict";

  function start(panel) {
    var url = panel.dataset.statusUrl;
    var done = panel.querySelector("[data-rows-done]");
    var total = panel.querySelector("[data-rows-total]");
    var failed = panel.querySelector("[data-rows-failed]");
    var downloads = panel.querySelector("[data-downloads]");
    var estimate = panel.querySelector("[data-estimate]");
    var started = document.querySelector("[data-started]");
    var finished = document.querySelector("[data-finished]");
    var attempts = document.querySelector("[data-attempts]");

    function show(data) {
      window.showProgress(panel, data);
      done.textContent = data.rows_done;
      total.textContent = data.rows_total;
      failed.textContent = data.rows_failed;
      estimate.hidden = data.is_terminal;
      started.textContent = data.started_at || "—";
      finished.textContent = data.finished_at || "—";
      attempts.textContent = data.attempts;
      if (data.result_url) {
        panel.querySelector("[data-result-link]").href = data.result_url;
        // The errors file is offered only when a row was refused, as on a page loaded after the end.
        var errorsLink = panel.querySelector("[data-errors-link]");
        if (errorsLink && data.rows_failed > 0) {
          errorsLink.href = data.errors_url;
        } else if (errorsLink) {
          errorsLink.remove();
        }
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
