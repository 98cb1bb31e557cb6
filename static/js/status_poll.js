// Polls a JSON status endpoint until it reports a terminal state: shared by the training-run and
// batch-job pages, each of which supplies the function that shows one status (starting with showProgress).
(function () {
  "use strict";

  var INTERVAL_MS = 1000;
  var MAX_INTERVAL_MS = 15000;

  window.statusPoll = function (url, show) {
    var delay = INTERVAL_MS;

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
  };

  // What every progress panel shows: the bar, the percentage, the status badge and a failure's reason.
  window.showProgress = function (panel, data) {
    var bar = panel.querySelector("[data-progress-bar]");
    var error = panel.querySelector("[data-error]");
    var status = panel.querySelector("[data-status]");
    bar.value = data.progress;
    bar.textContent = data.progress + "%";
    panel.querySelector("[data-progress-percent]").textContent = data.progress + "%";
    status.textContent = data.status_label;
    status.className = "badge status-" + data.status;
    if (data.error_message) {
      error.textContent = data.error_message;
      error.hidden = false;
    }
  };
})();
