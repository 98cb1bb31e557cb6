// Renders every element with data-figure="<id of a json_script block>" as a plotly chart (model, version,
// monitoring and retraining pages); an element with data-static (sparklines) is drawn without hover tools.
(function () {
  "use strict";

  function render() {
    if (!window.Plotly) {
      return;
    }
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      var source = document.getElementById(element.dataset.figure);
      if (!source || element.dataset.rendered === "true") {
        return;
      }
      var figure = JSON.parse(source.textContent);
      var still = element.hasAttribute("data-static");
      var layout = Object.assign({}, figure.layout || {});
      if (!still) {
        layout.autosize = true;
        delete layout.width;
      }
      window.Plotly.newPlot(element, figure.data || [], layout, {
        responsive: !still,
        staticPlot: still,
        displaylogo: false,
        modeBarButtonsToRemove: ["lasso2d", "select2d"],
      }).then(function () {
        element.dataset.rendered = "true";
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
})();
