// The loss per epoch as SVG: the training loss and, when the server reports one, the
// validation loss; a log scale when every loss is above 0. The first and last training losses
// and the number of points are in the SVG's data- attributes, for readers and tests.
import { fmt, svg } from "./format.js";

const WIDTH = 300;
const HEIGHT = 150;
const LEFT = 46;
const RIGHT = 8;
const TOP = 8;
const BOTTOM = 22;

export function drawCurve(root, history) {
  const shown = history.filter((p) => Number.isFinite(p.loss));
  root.replaceChildren();
  root.dataset.count = String(shown.length);
  if (!shown.length) {
    delete root.dataset.first;
    delete root.dataset.last;
    root.append(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "empty" }, "no epochs trained yet"));
    return;
  }
  const losses = shown.flatMap((p) => (p.validation_loss === undefined ? [p.loss] : [p.loss, p.validation_loss]));
  const log = losses.every((v) => v > 0);
  const scale = (v) => (log ? Math.log10(v) : v);
  let low = Math.min(...losses.map(scale));
  let high = Math.max(...losses.map(scale));
  if (high - low < 1e-9) {
    low -= 0.5;
    high += 0.5;
  }
  const first = shown[0].epoch;
  const last = shown[shown.length - 1].epoch;
  const x = (epoch) => LEFT + ((epoch - first) / Math.max(1, last - first)) * (WIDTH - LEFT - RIGHT);
  const y = (v) => TOP + ((high - scale(v)) / (high - low)) * (HEIGHT - TOP - BOTTOM);
  root.append(svg("rect", { x: LEFT, y: TOP, width: WIDTH - LEFT - RIGHT, height: HEIGHT - TOP - BOTTOM, class: "frame" }));
  const unscale = (s) => (log ? 10 ** s : s);
  root.append(svg("text", { x: LEFT - 4, y: TOP + 8, class: "axis", "text-anchor": "end" }, fmt(unscale(high), 3)));
  root.append(svg("text", { x: LEFT - 4, y: HEIGHT - BOTTOM, class: "axis", "text-anchor": "end" }, fmt(unscale(low), 3)));
  root.append(svg("text", { x: LEFT, y: HEIGHT - 6, class: "axis" }, `epoch ${first}`));
  root.append(svg("text", { x: WIDTH - RIGHT, y: HEIGHT - 6, class: "axis", "text-anchor": "end" }, `${last}`));
  if (log) root.append(svg("text", { x: 4, y: HEIGHT / 2, class: "axis" }, "log"));
  const line = (values, id) => svg("polyline", {
    id, class: id, points: values.map(([e, v]) => `${x(e).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
  });
  root.append(line(shown.map((p) => [p.epoch, p.loss]), "training-loss"));
  const validation = shown.filter((p) => p.validation_loss !== undefined);
  if (validation.length) root.append(line(validation.map((p) => [p.epoch, p.validation_loss]), "validation-loss"));
  root.dataset.first = String(shown[0].loss);
  root.dataset.last = String(shown[shown.length - 1].loss);
}
