"""A Step, drawn: the network as columns of neurons with every number of the step, as SVG.

    trace = client.step("article", [0, 1], [1], 0.001, dry_run=True)
    svg = step_svg(trace, client.get_model("article"))      # the SVG text
    write_step_drawing("step.svg", trace, model)             # or "step.png"

Each neuron shows its net, output, error and delta (and its bias before -> after), the output
layer its target; each connection is coloured by the sign of its weight, as wide as its size
against the largest weight, and labelled `before -> after`. The input, the target and the
learning rate head the picture. Big layers stay legible: connections fade with their number,
weight labels are drawn only where they fit, and a column of neurons too dense for the full
numbers shows each neuron's output alone (or nothing, where even that would overlap); every
neuron's and (up to MAX_TITLED connections a layer) every connection's numbers are in its
tooltip (<title>).

The SVG is written by hand: no dependency, small, crisp at any zoom, its text easy to search,
and the same bytes for the same step (no timestamps, ids from positions). PNG goes through
cairosvg, which rasterises this very SVG; it needs `pip install 'jitnet[plot]'` and the cairo
library (Debian: libcairo2), imported only when a .png is asked for.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple
from xml.sax.saxutils import escape

import numpy as np

from .explain import ArticleNames, fmt, short_vector, weights_before
from .results import Model, StepTrace

# Colours: positive weights blue, negative red (ColorBrewer RdBu ends), zero grey.
POSITIVE, NEGATIVE, ZERO = "#2166ac", "#b2182b", "#999999"
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
FONT_SIZE = 11
LINE = 13  # px per line of a label
CHAR = 0.62 * FONT_SIZE  # the width of one character, about: for label boxes
RADIUS = 16
COLUMN_GAP, DENSE_COLUMN_GAP = 300, 220  # px between columns: with weight labels, without
MAX_LABELLED = 64  # weight labels are tried for layers of at most this many connections
MAX_TITLED = 1024  # connections get a tooltip in layers of at most this many
LABEL_GAP = 1.0  # px kept between labels (and from the neurons)
MAX_HEIGHT = 960  # px for the tallest column of neurons
TOP, BOTTOM = 64, 44  # header and footer


class MissingDependency(ImportError):
    """An optional package a picture needs is not installed; the message says what to run."""


def picture_format(path) -> str:
    """'png' for a name ending in .png, else 'svg' (.svg or no suffix); ValueError for another
    suffix (a .pdf asked for should not silently become an SVG)."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in ("", ".svg", ".png"):
        return suffix[1:] or "svg"
    raise ValueError(f"{os.fspath(path)}: a picture is written as .svg or .png; "
                     "name the file so")


def require_png() -> None:
    """Raises MissingDependency, saying how to install it, unless cairosvg can be used."""
    _cairosvg()


def _cairosvg():
    try:
        import cairosvg
    except ImportError:
        raise MissingDependency("a PNG drawing needs cairosvg: pip install 'jitnet[plot]' "
                                "(or write .svg, which needs nothing)") from None
    except OSError:  # cairocffi found no libcairo
        raise MissingDependency("a PNG drawing needs the cairo library: apt-get install "
                                "libcairo2 (or write .svg, which needs nothing)") from None
    return cairosvg


def png_from_svg(svg: str, scale: float = 1.5) -> bytes:
    """The SVG rasterised by cairosvg (MissingDependency when it cannot be)."""
    return _cairosvg().svg2png(bytestring=svg.encode("utf-8"), scale=scale)


def write_step_drawing(path, trace: StepTrace, model: Model | None = None) -> None:
    """step_svg written to `path`: SVG, or PNG when the name ends in .png."""
    kind = picture_format(path)
    svg = step_svg(trace, model)
    if kind == "png":
        data = png_from_svg(svg)
        with open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(svg)


# --- layout ----------------------------------------------------------------------------------


class _Box(NamedTuple):
    """A rectangle, maybe turned: its four corners in order."""

    corners: tuple[tuple[float, float], ...]

    @classmethod
    def upright(cls, left: float, top: float, right: float, bottom: float) -> _Box:
        return cls(((left, top), (right, top), (right, bottom), (left, bottom)))

    def turned(self, x: float, y: float, degrees: float) -> _Box:
        """This box (drawn about the origin) rotated by `degrees` and moved to (x, y)."""
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        return _Box(tuple((x + c * u - s * v, y + s * u + c * v) for u, v in self.corners))

    def overlaps(self, other: _Box, gap: float = 0.0) -> bool:
        """Whether the two come closer than `gap`. Separating axes: two rectangles are apart
        when their projections on one of the four edge normals do not meet."""
        for box in (self, other):
            for (x1, y1), (x2, y2) in zip(box.corners, box.corners[1:3], strict=False):
                length = math.hypot(x2 - x1, y2 - y1) or 1.0
                nx, ny = (y1 - y2) / length, (x2 - x1) / length
                mine = [nx * x + ny * y for x, y in self.corners]
                theirs = [nx * x + ny * y for x, y in other.corners]
                if max(mine) + gap <= min(theirs) or max(theirs) + gap <= min(mine):
                    return False
        return True


class _Placed:
    """Boxes already drawn on, to keep labels from covering each other."""

    def __init__(self):
        self.boxes: list[_Box] = []

    def free(self, box: _Box) -> bool:
        return not any(box.overlaps(b, LABEL_GAP) for b in self.boxes)

    def take(self, box: _Box) -> None:
        self.boxes.append(box)


def _text_box(x: float, y: float, lines: list[str], anchor: str) -> _Box:
    """The box of `lines` whose first baseline is at y, anchored at x (start/middle/end)."""
    width = max(len(t) for t in lines) * CHAR + 6
    left = {"start": x - 3, "middle": x - width / 2, "end": x - width + 3}[anchor]
    return _Box.upright(left, y - FONT_SIZE, left + width, y - FONT_SIZE + LINE * len(lines) + 4)


def _colour(w: float) -> str:
    return POSITIVE if w > 0 else NEGATIVE if w < 0 else ZERO


def _new(old: float, new: float) -> str:
    """The value after the update, to two significant digits of its change: 0.6 -> 0.60003
    (a change of 3e-5), 0.6 -> 0.6000062 (6.2e-6), so a small step neither vanishes nor looks
    bigger than it is."""
    change = abs(new - old)
    if change == 0.0 or not math.isfinite(change):
        return _num(new)
    size = max(abs(new), abs(old))
    digits = math.floor(math.log10(size)) - math.floor(math.log10(change)) + 2
    return fmt(new, min(max(digits, 5), 15))


def _num(x: float) -> str:
    return fmt(x, 5)


class _Svg:
    """The elements, in drawing order: connections, neurons, label boxes and labels."""

    def __init__(self):
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self, x: float, y: float, lines: list[str], anchor: str = "start",
             colour: str = "#222", css: str = "label", box: bool = True) -> None:
        if box:
            (left, top), _, (right, bottom), _ = _text_box(x, y, lines, anchor).corners
            self.add(f'<rect class="label-box" x="{left:.1f}" y="{top:.1f}" '
                     f'width="{right - left:.1f}" height="{bottom - top:.1f}" rx="3"/>')
        spans = "".join(f'<tspan x="{x:.1f}" dy="{0 if k == 0 else LINE}">{escape(t)}</tspan>'
                        for k, t in enumerate(lines))
        self.add(f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
                 f'fill="{colour}">{spans}</text>')


def step_svg(trace: StepTrace, model: Model | None = None) -> str:
    """The step as an SVG document (text). `model` (get_model) adds the architecture to the
    title; without it the picture has every number but no description."""
    names = ArticleNames(trace)
    n_layers = len(trace.layers)
    sizes = [trace.input.size] + [layer.net.size for layer in trace.layers]
    before = [weights_before(trace, k) for k in range(n_layers)]
    labels = [[_neuron_label(trace, names, before, column, j) for j in range(count)]
              for column, count in enumerate(sizes)]

    # Rows as far apart as a hidden neuron's full label needs, closer when the tallest column
    # would not fit MAX_HEIGHT (then a column shows compact labels, or none where they would
    # overlap). Columns as far apart as weight labels need, closer for layers too big for them.
    hidden_lines = [len(labels[c][0].lines) for c in range(1, n_layers)]
    full_gap = 2 * RADIUS + LINE * max(hidden_lines or [1]) + 16
    height_inside = min(MAX_HEIGHT, full_gap * max(sizes))
    gaps = [min(full_gap, height_inside / count) for count in sizes]
    radii = [min(RADIUS, 0.42 * gap) for gap in gaps]
    labelled_layers = [sizes[k] * sizes[k + 1] <= MAX_LABELLED for k in range(n_layers)]
    left = max(60, max(len(label.lines[0]) for label in labels[0]) * CHAR + radii[0] + 20)
    xs = [left]
    for labelled in labelled_layers:
        xs.append(xs[-1] + (COLUMN_GAP if labelled else DENSE_COLUMN_GAP))
    right = max(len(line) for label in labels[-1] for line in label.lines) * CHAR + 40
    width = max(760, xs[-1] + radii[-1] + right)

    title = f"Step on model '{trace.model_id}'"
    if model is not None:
        title += f": {model.describe()}"
    state = (f"dry run, the stored weights stay version {trace.version}" if trace.dry_run
             else f"stored as version {trace.version}")
    summary = [f"input {short_vector(trace.input)} · target {short_vector(trace.target)}",
               f"learning rate {fmt(trace.learning_rate)} · loss {fmt(trace.loss)} · {state}"]
    if sum(map(len, summary)) * CHAR < width - 40:
        summary = [" · ".join(summary)]
    top = TOP + LINE * (len(summary) - 1)
    middle = top + height_inside / 2
    ys = [[middle + (j - (count - 1) / 2) * gaps[c] for j in range(count)]
          for c, count in enumerate(sizes)]

    def reach(column: int) -> float:
        """How far below its lowest neuron a column's drawing goes (a label, or the circle)."""
        lines = len(labels[column][-1].lines)
        if column == len(sizes) - 1:
            return max(radii[column], LINE * lines / 2 + 4)
        if column > 0 and gaps[column] >= full_gap:
            return radii[column] + LINE * lines + 6
        return radii[column]

    height = max(ys[c][-1] + reach(c) for c in range(len(sizes))) + BOTTOM
    largest = max([float(np.abs(w).max(initial=0.0)) for w, _ in before] + [1e-300])

    svg = _Svg()
    placed = _Placed()
    for column in range(len(sizes)):  # neurons first, so that labels keep off them
        r = radii[column]
        for y in ys[column]:
            placed.take(_Box.upright(xs[column] - r, y - r, xs[column] + r, y + r))

    # Connections, layer by layer: faded with their number; their labels wait for the neurons'.
    weight_labels = []
    for k, layer in enumerate(trace.layers):
        w_old, w_new = before[k][0], layer.weights
        count = w_old.size
        opacity = min(0.85, 4.0 / math.sqrt(max(count, 1)))
        thin = 1.0 if labelled_layers[k] else 0.5
        svg.add(f'<g class="connections" id="layer{k + 1}-weights" '
                f'stroke-opacity="{opacity:.3f}">')
        feed = names.inputs(k, sizes[k])
        for j in range(sizes[k + 1]):
            for i in range(sizes[k]):
                old, new = float(w_old[j, i]), float(w_new[j, i])
                x1, y1, x2, y2 = xs[k], ys[k][i], xs[k + 1], ys[k + 1][j]
                stroke = (0.4 + 3.2 * abs(old) / largest) * thin
                tooltip = ""
                if count <= MAX_TITLED:
                    text = (f"w_{names.tags[k]}[{j + 1},{i + 1}] ({feed[i]} to "
                            f"{names.neuron('neuron', k, j)}): {fmt(old)} -> {_new(old, new)}")
                    tooltip = f"<title>{escape(text)}</title>"
                svg.add(f'<line id="w{k + 1}-{j + 1}-{i + 1}" x1="{x1:.1f}" y1="{y1:.1f}" '
                        f'x2="{x2:.1f}" y2="{y2:.1f}" stroke="{_colour(old)}" '
                        f'stroke-width="{stroke:.2f}">{tooltip}</line>')
                if labelled_layers[k]:
                    weight_labels.append((x1, y1, x2, y2, f"{_num(old)} → {_new(old, new)}",
                                          _colour(old)))
        svg.add("</g>")

    # Neurons with their tooltips, then their labels, then the weights', kept off each other.
    for column in range(len(sizes)):
        svg.add(f'<g class="neurons" id="column{column}">')
        for j, y in enumerate(ys[column]):
            svg.add(f'<circle id="n{column}-{j + 1}" cx="{xs[column]:.1f}" cy="{y:.1f}" '
                    f'r="{radii[column]:.1f}"><title>{escape(labels[column][j].title)}</title>'
                    "</circle>")
        svg.add("</g>")
    dropped = 0
    svg.add('<g class="neuron-labels">')
    for column in range(len(sizes)):
        x, r = xs[column], radii[column]
        last = column == len(sizes) - 1
        for j, y in enumerate(ys[column]):
            label = labels[column][j]
            if column == 0:  # left of the inputs
                where = [(label.lines, "end", x - r - 6, y + 4)]
            elif last:  # right of the outputs, where there is room
                where = [(label.lines, "start", x + r + 8,
                          y - (len(label.lines) - 1) * LINE / 2 + 4)]
            elif gaps[column] >= full_gap:  # below a hidden neuron
                where = [(label.lines, "middle", x, y + r + FONT_SIZE + 2)]
            else:  # a dense column: only the output, beside the neuron
                where = [([label.compact], "start", x + r + 4, y + 4)]
            for lines, anchor, lx, ly in where:
                box = _text_box(lx, ly, lines, anchor)
                if placed.free(box):
                    placed.take(box)
                    svg.text(lx, ly, lines, anchor)
                    break
            else:
                dropped += 1
    svg.add("</g>")
    svg.add('<g class="weight-labels">')
    for x1, y1, x2, y2, text, colour in weight_labels:
        # Along the line, so that it is plain which line a label belongs to, and near the
        # neuron the weight feeds first (W[j] is neuron j's row), then further out.
        degrees = math.degrees(math.atan2(y2 - y1, x2 - x1))
        shape = _text_box(0, FONT_SIZE / 2 - 1, [text], "middle")
        for t in (0.75, 0.62, 0.85, 0.5, 0.38, 0.25):
            x, y = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
            box = shape.turned(x, y, degrees)
            if placed.free(box):
                placed.take(box)
                svg.add(f'<g transform="translate({x:.1f} {y:.1f}) rotate({degrees:.1f})">')
                svg.text(0, FONT_SIZE / 2 - 1, [text], "middle", colour=colour, css="weight")
                svg.add("</g>")
                break
        else:
            dropped += 1
    svg.add("</g>")

    # Header and footer.
    svg.text(16, 24, [title], css="title", box=False)
    svg.text(16, 44, summary, box=False)
    footer = ["blue: positive weight, red: negative; line width: |weight|; on a connection: "
              "weight before → after"]
    if dropped or not all(labelled_layers):
        footer.append("numbers left out where they would overlap: hover a neuron or a "
                      "connection for its tooltip")
    svg.text(16, height - BOTTOM + 22, footer, css="note", box=False)

    body = "\n".join(svg.parts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="{FONT}" font-size="{FONT_SIZE}">\n'
            f"<title>{escape(title)}</title>\n"
            "<style>\n"
            ".label-box { fill: #ffffff; fill-opacity: 0.85; }\n"
            "circle { fill: #fdf6e3; stroke: #444444; stroke-width: 1.2; }\n"
            ".title { font-size: 14px; font-weight: bold; }\n"
            ".note { fill: #555555; }\n"
            "line { stroke-linecap: round; }\n"
            "</style>\n"
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>\n'
            f"{body}\n</svg>\n")


class _Label(NamedTuple):
    lines: list[str]  # the full label
    compact: str  # for a dense column: the output alone
    title: str  # the tooltip: every number, with the article's names


def _neuron_label(trace: StepTrace, names: ArticleNames, before, column: int, j: int) -> _Label:
    """Neuron j of a column (0: the inputs)."""
    if column == 0:
        text = f"input{j + 1} = {fmt(trace.input[j])}"
        return _Label([text], text, text)
    k = column - 1
    layer = trace.layers[k]
    rows = [("net", layer.net[j]), ("output", layer.output[j])]
    if k == len(trace.layers) - 1:
        rows.append(("target", trace.target[j]))
    rows += [("error", layer.error[j]), ("delta", layer.delta[j])]
    lines = [f"{name} {_num(v)}" for name, v in rows]
    title = [f"{names.neuron(name, k, j)} = {fmt(v)}" for name, v in rows]
    b_old = before[k][1]
    if b_old is not None and layer.biases is not None:
        old, new = float(b_old[j]), float(layer.biases[j])
        lines.append(f"bias {_num(old)} → {_new(old, new)}")
        title.append(f"b_{names.tags[k]}[{j + 1}] = {fmt(old)} -> {_new(old, new)}")
    return _Label(lines, _num(layer.output[j]),
                  f"{names.neuron('neuron', k, j)}: " + ", ".join(title))
