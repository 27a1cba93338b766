// The decision surface: the network's output over the plane of its two inputs (a Predict on a
// grid, drawn on a canvas, one cell per grid point), and the samples as dots on an SVG layer
// above it, so the canvas holds the surface alone (a reader of its pixels reads the model).
import { CLASS_COLOURS, outputColour, rgb, svg } from "./format.js";

export const SIZE = 300; // the canvas and the dots' layer, in px

// The plane shown: the samples' range and 15% more on each side (half a unit where all the
// samples share a value), as the training plot's (client/plot.py surface_grid).
export function planeOf(data) {
  const rows = [...data.inputs, ...data.validation_inputs];
  const range = [0, 1].map((c) => {
    const values = rows.map((r) => r[c]);
    const low = Math.min(...values);
    const high = Math.max(...values);
    const pad = high > low ? 0.15 * (high - low) : 0.5;
    return [low - pad, high + pad];
  });
  return { x: range[0], y: range[1] };
}

export function toPixel(plane, x, y) {
  return [((x - plane.x[0]) / (plane.x[1] - plane.x[0])) * SIZE,
    SIZE - ((y - plane.y[0]) / (plane.y[1] - plane.y[0])) * SIZE];
}

export function toPlane(plane, px, py) {
  return [plane.x[0] + (px / SIZE) * (plane.x[1] - plane.x[0]),
    plane.y[0] + ((SIZE - py) / SIZE) * (plane.y[1] - plane.y[0])];
}

function colourOf(outputs) {
  if (outputs.length === 1) return outputColour(outputs[0]); // 0.5 is the boundary
  let best = 0;
  for (let k = 1; k < outputs.length; k += 1) if (outputs[k] > outputs[best]) best = k;
  const strength = Math.min(1, Math.max(0.25, outputs[best]));
  return CLASS_COLOURS[best % CLASS_COLOURS.length].map((c) => Math.round(255 - (255 - c) * strength * 0.8));
}

// surface: {steps, x: [x0, x1], y: [y0, y1], outputs: [[...] per point], version}, the points
// row by row from the lowest y, each row from the lowest x; grid point (c, r) is drawn as the
// cell centred on its own place in the plane.
export function drawSurface(canvas, surface) {
  const context = canvas.getContext("2d");
  const { steps, outputs } = surface;
  const cell = SIZE / (steps - 1);
  context.clearRect(0, 0, SIZE, SIZE);
  for (let r = 0; r < steps; r += 1) {
    for (let c = 0; c < steps; c += 1) {
      context.fillStyle = rgb(colourOf(outputs[r * steps + c]));
      context.fillRect(c * cell - cell / 2, SIZE - r * cell - cell / 2, cell + 0.5, cell + 0.5);
    }
  }
  canvas.dataset.x0 = surface.x[0];
  canvas.dataset.x1 = surface.x[1];
  canvas.dataset.y0 = surface.y[0];
  canvas.dataset.y1 = surface.y[1];
  canvas.dataset.version = String(surface.version);
  canvas.dataset.draws = String(Number(canvas.dataset.draws || 0) + 1);
}

export function clearSurface(canvas) {
  canvas.getContext("2d").clearRect(0, 0, SIZE, SIZE);
  delete canvas.dataset.version;
}

function targetColour(target) {
  if (target.length === 1) return outputColour(target[0]);
  return CLASS_COLOURS[target.indexOf(Math.max(...target)) % CLASS_COLOURS.length];
}

// The samples: filled dots to train on, hollow ones held out; the Step's sample ringed.
export function drawPoints(layer, data, plane, selected) {
  const dots = [];
  const radius = data.inputs.length > 300 ? 3 : data.inputs.length > 40 ? 4 : 7;
  const add = (rows, targets, heldOut) => rows.forEach((row, i) => {
    const [px, py] = toPixel(plane, row[0], row[1]);
    const colour = rgb(targetColour(targets[i]));
    dots.push(svg("circle", {
      cx: px.toFixed(1), cy: py.toFixed(1), r: radius,
      fill: heldOut ? "none" : colour, stroke: heldOut ? colour : "#333333",
      "stroke-width": heldOut ? 2 : 1, class: heldOut ? "held-out" : "sample",
    }));
  });
  add(data.inputs, data.targets, false);
  add(data.validation_inputs, data.validation_targets, true);
  if (selected !== null && data.inputs[selected]) {
    const [px, py] = toPixel(plane, data.inputs[selected][0], data.inputs[selected][1]);
    dots.push(svg("circle", { cx: px, cy: py, r: radius + 5, class: "selected" }));
  }
  layer.replaceChildren(...dots);
}

// The training sample nearest to a pixel, within `reach` px, or null.
export function nearestSample(data, plane, px, py, reach = 14) {
  let best = null;
  let bestDistance = reach * reach;
  data.inputs.forEach((row, i) => {
    const [x, y] = toPixel(plane, row[0], row[1]);
    const distance = (x - px) ** 2 + (y - py) ** 2;
    if (distance <= bestDistance) {
      best = i;
      bestDistance = distance;
    }
  });
  return best;
}
