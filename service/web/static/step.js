// A Step shown: the article's arithmetic line by line (the text `jitnet step --explain`
// prints, client/explain.py), its drawing (client/draw.py's SVG, shown as an image: it is
// markup from the server, and an <img> never runs or fetches anything in it) and a table of
// every neuron's net, output, error and delta.
import { fmt, html } from "./format.js";
import { neuronName } from "./network.js";

let drawingUrl = null;

export function renderStep(result, model, elements) {
  elements.explain.textContent = result.explain;
  if (drawingUrl) URL.revokeObjectURL(drawingUrl);
  drawingUrl = URL.createObjectURL(new Blob([result.svg], { type: "image/svg+xml" }));
  elements.drawing.src = drawingUrl;
  elements.drawing.hidden = false;
  const sizes = model.layer_sizes;
  const rows = [];
  result.layers.forEach((layer, k) => {
    const tag = k === result.layers.length - 1 ? "o" : result.layers.length === 2 ? "h" : `h${k + 1}`;
    layer.net.forEach((_, j) => {
      const row = html("tr", null, { "data-layer": tag, "data-neuron": j + 1 });
      row.append(html("th", tag), html("td", neuronName(sizes, k + 1, j)));
      for (const field of ["net", "output", "error", "delta"]) {
        row.append(html("td", fmt(layer[field][j]), { "data-field": field, "data-value": layer[field][j] }));
      }
      row.append(html("td", layer.weights[j].map((w) => fmt(w)).join("  "),
        { "data-field": "weights", "data-value": JSON.stringify(layer.weights[j]) }));
      rows.push(row);
    });
  });
  elements.table.tBodies[0].replaceChildren(...rows);
  elements.table.hidden = false;
  elements.table.dataset.version = String(result.version);
}
