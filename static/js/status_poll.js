// Polls a JSON status endpoint until it reports a terminal state: shared by the training-run and
// batch-job pages, each of which supplies the function that shows one status.
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
})();
