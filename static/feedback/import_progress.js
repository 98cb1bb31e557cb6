// Polls a feedback import's status endpoint and updates the progress panel until the import is finished.
(function () {
  "use strict";

  var COUNTS = ["rows_done", "rows_total", "rows_created", "rows_updated", "rows_unchanged", "rows_failed"];

  function start(panel) {
    var downloads = panel.querySelector("[data-downloads]");
    var estimate = panel.querySelector("[data-estimate]");
    var started = document.querySelector("[data-started]");
    var finished = document.querySelector("[data-finished]");
    var attempts = document.querySelector("[data-attempts]");

    function show(data) {
      window.showProgress(panel, data);
      COUNTS.forEach(function (name) {
        var cell = panel.querySelector("[data-" + name.replace(/_/g, "-") + "]");
        if (cell) {
          cell.textContent = data[name];
        }
      });
      estimate.hidden = data.is_terminal;
      started.textContent = data.started_at || "—";
      finished.textContent = data.finished_at || "—";
      attempts.textContent = data.attempts;
      if (data.errors_url) {
        panel.querySelector("[data-errors-link]").href = data.errors_url;
        downloads.hidden = false;
      }
      panel.dataset.importStatus = data.status;
    }

    window.statusPoll(panel.dataset.statusUrl, show);
  }

  document.querySelectorAll("#import-progress[data-status-url]").forEach(function (panel) {
    if (panel.dataset.terminal !== "true") {
      start(panel);
    }
  });
})();
