// Draws the class-probability bar chart from the JSON that the page embeds with json_script.
(function () {
  "use strict";
  const source = document.getElementById("probability-chart-data");
  const target = document.getElementById("probability-chart");
  if (!source || !target || !window.Plotly) {
    return;
  }
  const data = JSON.parse(source.textContent);
  const colors = data.classes.map((c) => (c === data.predicted ? "#2457d6" : "#a9bce8"));
  window.Plotly.newPlot(
    target,
    [
      {
        type: "bar",
        x: data.classes,
        y: data.probabilities,
        marker: { color: colors },
        text: data.probabilities.map((p) => (p * 100).toFixed(1) + "%"),
        textposition: "auto",
        hovertemplate: "%{x}: %{y:.4f}<extra></extra>",
      },
    ],
    {
      height: 260,
      margin: { t: 10, r: 10, b: 40, l: 50 },
      // Class labels like 0 and 1 are categories, not positions on a number line.
      xaxis: { type: "category", title: { text: "Class" } },
      yaxis: { range: [0, 1], tickformat: ".0%", title: { text: "Probability" } },
    },
    { displayModeBar: false, responsive: true }
  );
})();
