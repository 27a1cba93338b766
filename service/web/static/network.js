// The network drawn as SVG: columns of neurons, inputs on the left; every weight a line as
// wide as its size against the largest, blue when positive and red when negative (the step
// drawing's colours, client/draw.py); with the activations of one input, every neuron tinted
// by its output and labelled with it. Each line carries its weight in data-w, for readers
// and tests; each element's numbers are in its tooltip.
import { fmt, outputColour, rgb, svg } from "./format.js";

const POSITIVE = "#2166ac";
const NEGATIVE = "#b2182b";
const WIDTH = 560;
const HEIGHT = 340;
const MARGIN_X = 70;
const MARGIN_Y = 22;

export function neuronName(sizes, column, j) {
  const last = sizes.length - 1;
  if (column === 0) return `input${j + 1}`;
  if (column === last) return sizes[column] === 1 ? "output" : `output${j + 1}`;
  return last === 2 ? `h${j + 1}` : `h${column}.${j + 1}`;
}

// Where neuron j of each column sits.
function layout(sizes) {
  const xs = sizes.map((_, c) => MARGIN_X + ((WIDTH - 2 * MARGIN_X) * c) / (sizes.length - 1));
  const gaps = sizes.map((n) => (HEIGHT - 2 * MARGIN_Y) / n);
  const ys = sizes.map((n, c) => Array.from({ length: n }, (_, j) => MARGIN_Y + gaps[c] * (j + 0.5)));
  const radius = Math.max(3, Math.min(17, 0.38 * Math.min(...gaps)));
  return { xs, ys, radius };
}

// A neuron's output as 0..1 for its tint: the activation's own range.
function tint(kind, value, layerMax) {
  if (kind === "sigmoid" || kind === "softmax") return value;
  if (kind === "tanh") return (value + 1) / 2;
  return 0.5 + value / (2 * (layerMax || 1)); // relu, linear and the inputs: by the largest
}

export function drawNetwork(root, model, activations = null) {
  const sizes = model.layer_sizes;
  const { xs, ys, radius } = layout(sizes);
  const layers = model.layers || [];
  let largest = 0;
  for (const layer of layers) for (const row of layer.weights) for (const w of row) largest = Math.max(largest, Math.abs(w));
  const links = svg("g", { class: "links" });
  const linkCount = layers.reduce((n, layer) => n + layer.weights.length * layer.weights[0].length, 0);
  const opacity = linkCount > 400 ? 0.45 : 0.85;
  layers.forEach((layer, k) => {
    layer.weights.forEach((row, j) => {
      row.forEach((w, i) => {
        const line = svg("line", {
          x1: xs[k], y1: ys[k][i], x2: xs[k + 1], y2: ys[k + 1][j],
          stroke: w > 0 ? POSITIVE : w < 0 ? NEGATIVE : "#999999",
          "stroke-width": (0.5 + (6 * Math.abs(w)) / (largest || 1)).toFixed(2),
          "stroke-opacity": opacity, "data-w": w, "data-layer": k, "data-from": i, "data-to": j,
        });
        line.append(svg("title", {}, `${neuronName(sizes, k, i)} -> ${neuronName(sizes, k + 1, j)}: weight ${fmt(w)}`));
        links.append(line);
      });
    });
  });

  const neurons = svg("g", { class: "neurons" });
  const kinds = sizes.map((_, c) => (c === 0 ? "input" : c === sizes.length - 1 ? model.output : model.hidden));
  sizes.forEach((n, c) => {
    const values = activations ? (c === 0 ? activations.input : activations.layers[c - 1].output) : null;
    const layerMax = values ? Math.max(...values.map((v) => Math.abs(v))) : 1;
    for (let j = 0; j < n; j += 1) {
      const name = neuronName(sizes, c, j);
      const group = svg("g", { class: "neuron", "data-name": name });
      const value = values ? values[j] : null;
      const fill = value === null ? "#ffffff" : rgb(outputColour(tint(kinds[c], value, layerMax)));
      group.append(svg("circle", { cx: xs[c], cy: ys[c][j], r: radius, fill, stroke: "#444444", "stroke-width": 1.2 }));
      const bias = c > 0 && layers[c - 1] && layers[c - 1].biases ? layers[c - 1].biases[j] : null;
      const facts = [name];
      if (bias !== null) facts.push(`bias ${fmt(bias)}`);
      if (activations && c > 0) facts.push(`net ${fmt(activations.layers[c - 1].net[j])}`);
      if (value !== null) facts.push(`${c === 0 ? "value" : "output"} ${fmt(value)}`);
      group.append(svg("title", {}, facts.join(", ")));
      if (value !== null && radius >= 11) {
        group.append(svg("text", { x: xs[c], y: ys[c][j] + 3.5, class: "value" }, fmt(value, 2)));
      }
      if (n <= 12) {
        const left = c === 0;
        const right = c === sizes.length - 1;
        group.append(svg("text", {
          x: left ? xs[c] - radius - 6 : right ? xs[c] + radius + 6 : xs[c],
          y: left || right ? ys[c][j] + 4 : ys[c][j] - radius - 4,
          class: "name", "text-anchor": left ? "end" : right ? "start" : "middle",
        }, name));
      }
      neurons.append(group);
    }
  });
  root.replaceChildren(links, neurons);
  root.dataset.model = model.id;
  root.dataset.version = String(model.version);
  root.dataset.draws = String(Number(root.dataset.draws || 0) + 1);
}
