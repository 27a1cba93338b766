// Numbers as the command line prints them (client/explain.py's fmt): up to 6 significant
// digits, no trailing zeros: 0.6, 0.645656, 1, 1e-7.
export function fmt(x, digits = 6) {
  if (x === null || x === undefined || Number.isNaN(x)) return "-";
  if (x === 0) return "0";
  const text = Number(x).toPrecision(digits);
  const number = Number(text);
  const abs = Math.abs(number);
  if (abs !== 0 && (abs < 1e-4 || abs >= 10 ** digits)) {
    return number.toExponential().replace(/\.?0+e/, "e").replace("e+", "e");
  }
  return String(number);
}

// (0, 1) for a short vector.
export function vector(values) {
  return `(${values.map((v) => fmt(v)).join(", ")})`;
}

// An element of the page's SVG, with its attributes; text (if any) as textContent only.
export function svg(name, attributes = {}, text = null) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

// An HTML element with text content (never markup).
export function html(name, text = null, attributes = {}) {
  const el = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

// Playground's colours for the output: orange for 0 (or below), blue for 1 (or above).
const LOW = [245, 147, 34];
const MID = [232, 234, 235];
const HIGH = [8, 119, 189];

export function outputColour(t) {
  const u = Math.min(1, Math.max(0, t));
  const [a, b, s] = u < 0.5 ? [LOW, MID, u * 2] : [MID, HIGH, (u - 0.5) * 2];
  return a.map((c, i) => Math.round(c + (b[i] - c) * s));
}

// One colour per class for several outputs (argmax), as the training plot's tab10.
export const CLASS_COLOURS = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
  [148, 103, 189], [140, 86, 75]];

export function rgb([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}
