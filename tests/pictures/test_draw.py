"""The network drawing (client/draw.py): the SVG parses and holds every number of the step, for
the article's 2-4-1, a model with biases and negative weights, models without two inputs, and
64-64-10 (faded, labels left out where they would overlap); one rendered to PNG is not blank;
the same step gives the same bytes; without cairosvg a PNG says what to install."""

from __future__ import annotations

import builtins
import io
import math
import re
import sys
from itertools import pairwise

import numpy as np
import pytest

from jitnet.client import datasets, draw, step_svg
from jitnet.client.explain import fmt

from .conftest import SVG, find_id, parse, texts


def trunc(x: float, places: int) -> float:
    """The article's printing: truncated, not rounded."""
    return math.floor(x * 10**places + 1e-9) / 10**places


def close(text: str, value: float) -> bool:
    """A number shown with at least 5 significant digits is `value`, rounded."""
    return abs(float(text) - value) <= 0.51 * 10 ** (math.floor(math.log10(abs(value))) - 4)


def neuron_labels(root) -> list[dict[str, str]]:
    """Each full neuron label ('net 0.6', 'output 0.64566', ...) as {name: value text}."""
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "neuron-labels")
    labels = []
    for text in group.iter(f"{SVG}text"):
        lines = [t.text for t in text.iter(f"{SVG}tspan")]
        if len(lines) > 1:
            labels.append(dict(line.split(" ", 1) for line in lines))
    return labels


def weight_labels(root):
    """[(x, y, degrees, old text, new text)] of the labels on connections: where each sits,
    turned along its line."""
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "weight-labels")
    out = []
    for g in group.findall(f"{SVG}g"):
        x, y, degrees = map(float, re.match(r"translate\(([-\d.]+) ([-\d.]+)\) "
                                            r"rotate\(([-\d.]+)\)",
                                            g.get("transform")).groups())
        old, new = "".join(g.find(f"{SVG}text").itertext()).split(" → ")
        out.append((x, y, degrees, old, new))
    return out


def line_under(root, x, y, degrees):
    """The id of the one connection that passes through (x, y) in that direction."""
    found = []
    for line in root.iter(f"{SVG}line"):
        x1, y1, x2, y2 = (float(line.get(a)) for a in ("x1", "y1", "x2", "y2"))
        dx, dy = x2 - x1, y2 - y1
        t = ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)
        if (0 <= t <= 1 and math.hypot(x1 + t * dx - x, y1 + t * dy - y) < 0.2
                and abs(math.degrees(math.atan2(dy, dx)) - degrees) < 0.2):
            found.append(line.get("id"))
    assert len(found) == 1, f"{found} under the label at {x}, {y}"
    return found[0]


def make_article(client, model_id):
    net = datasets.article()
    model = client.create_model(net.layer_sizes, layers=net.layers, model_id=model_id,
                                **net.architecture)
    return model, client.step(model_id, [0, 1], [1], 0.001, dry_run=True)


def test_the_articles_drawing_holds_the_articles_numbers(client, model_id):
    model, trace = make_article(client, model_id)
    root = parse(step_svg(trace, model))
    circles = list(root.iter(f"{SVG}circle"))
    assert [c.get("id") for c in circles] == ["n0-1", "n0-2", "n1-1", "n1-2", "n1-3", "n1-4",
                                              "n2-1"]
    assert len(list(root.iter(f"{SVG}line"))) == 12
    everything = "\n".join(texts(root))
    assert "Step on model" in everything and "2-4-1 sigmoid/sigmoid mse, no bias, article " \
        "gradients" in everything
    assert "input (0, 1) · target (1) · learning rate 0.001" in everything
    assert "input1 = 0" in everything and "input2 = 1" in everything

    hidden, (output,) = neuron_labels(root)[:4], neuron_labels(root)[4:]
    # api.md's worked example, as the article prints it (truncated to two decimals).
    assert [h["net"] for h in hidden] == ["0.6", "0.7", "0.9", "0.3"]
    assert [trunc(float(h["output"]), 2) for h in hidden] == [0.64, 0.66, 0.71, 0.57]
    assert trunc(float(output["output"]), 2) == 0.78 and output["target"] == "1"
    assert trunc(float(output["delta"]), 2) == 0.04
    # Every number of the step, at 5 significant digits.
    for k, labels in ((0, hidden), (1, [output])):
        layer = trace.layers[k]
        for j, label in enumerate(labels):
            for name in ("net", "output", "error", "delta"):
                assert label[name] == fmt(getattr(layer, name)[j], 5), (k, j, name)
    # Each connection's label sits on it, with its weight before and after; the new output
    # weights are the article's "about 0.60003 0.70003 0.30003 0.40003".
    labels = weight_labels(root)
    assert len(labels) == 12  # none left out in the article's network
    new_output = {}
    for x, y, degrees, old, new in labels:
        k, j, i = map(int, line_under(root, x, y, degrees)[1:].split("-"))
        layer = trace.layers[k - 1]
        assert close(old, layer.weights_before[j - 1, i - 1])
        assert close(new, layer.weights[j - 1, i - 1])
        if k == 2:
            new_output[i] = round(float(new), 5)
    assert [new_output[i] for i in (1, 2, 3, 4)] == [0.60003, 0.70003, 0.30003, 0.40003]
    # Tooltips, with the article's names.
    assert "net1_h = 0.6" in find_id(root, "n1-1").find(f"{SVG}title").text
    assert find_id(root, "w2-1-1").find(f"{SVG}title").text.startswith(
        "w_o[1,1] (output1_h to neuron_o): 0.6 -> 0.60003")


def test_signs_widths_biases_and_a_real_step(client, model_id):
    layers = [(np.array([[0.5, -1.5], [-0.25, 2.0], [1.0, 0.1]]), np.array([0.1, -0.2, 0.3])),
              (np.array([[1.2, -0.7, 0.4], [-0.9, 0.3, 0.05]]), np.array([-0.1, 0.2]))]
    model = client.create_model([2, 3, 2], hidden="tanh", output="linear", layers=layers,
                                model_id=model_id)
    trace = client.step(model_id, [0.4, -0.8], [1, 0], 0.1)  # committed: version 2
    root = parse(step_svg(trace, model))
    assert "stored as version 2" in "\n".join(texts(root))
    for k, (w, _) in enumerate(layers):
        for (j, i), value in np.ndenumerate(w):
            line = find_id(root, f"w{k + 1}-{j + 1}-{i + 1}")
            assert line.get("stroke") == (draw.POSITIVE if value > 0 else draw.NEGATIVE)
    width = {ident: float(find_id(root, ident).get("stroke-width")) for ident in
             ("w1-2-2", "w1-1-2", "w1-1-1", "w2-2-3")}  # |w| 2.0, 1.5, 0.5, 0.05
    assert width["w1-2-2"] > width["w1-1-2"] > width["w1-1-1"] > width["w2-2-3"]
    labels = neuron_labels(root)
    assert len(labels) == 5
    for k, count in ((0, 3), (1, 2)):
        layer = trace.layers[k]
        for j in range(count):
            label = labels[j if k == 0 else 3 + j]
            old, new = label["bias"].split(" → ")
            assert close(old, layers[k][1][j]) and close(new, layer.biases[j])
            assert label["delta"] == fmt(layer.delta[j], 5)
    assert [labels[3]["target"], labels[4]["target"]] == ["1", "0"]
    # Negative weights have red labels.
    red = [g for g in root.iter(f"{SVG}text") if g.get("fill") == draw.NEGATIVE]
    assert red and all("→ -" in "".join(t.itertext()) for t in red)


@pytest.mark.parametrize("sizes", [(3, 5, 2), (4, 1), (2, 3, 3, 1)])
def test_models_without_two_inputs_or_with_other_depths(client, model_id, sizes):
    model = client.create_model(list(sizes), hidden="relu", output="sigmoid", init="he",
                                seed=2, model_id=model_id)
    rng = np.random.default_rng(0)
    trace = client.step(model_id, rng.random(sizes[0]), rng.random(sizes[-1]), 0.5,
                        dry_run=True)
    root = parse(step_svg(trace, model))
    assert len(list(root.iter(f"{SVG}circle"))) == sum(sizes)
    assert len(list(root.iter(f"{SVG}line"))) == sum(a * b for a, b in pairwise(sizes))
    inputs = [t for t in texts(root) if t.startswith("input") and " = " in t]
    assert inputs == [f"input{i + 1} = {fmt(v)}" for i, v in enumerate(trace.input)]
    for k, layer in enumerate(trace.layers):
        tag = "o" if k == len(sizes) - 2 else ("h" if len(sizes) == 3 else f"h{k + 1}")
        for j in range(sizes[k + 1]):
            title = find_id(root, f"n{k + 1}-{j + 1}").find(f"{SVG}title").text
            number = "" if sizes[k + 1] == 1 else str(j + 1)
            assert f"net{number}_{tag} = {fmt(layer.net[j])}" in title
            assert f"delta{number}_{tag} = {fmt(layer.delta[j])}" in title


def test_64_64_10_stays_legible(client, model_id):
    model = client.create_model([64, 64, 10], hidden="relu", output="softmax",
                                loss="cross-entropy", init="he", seed=1, model_id=model_id)
    rng = np.random.default_rng(1)
    target = np.eye(10)[3]
    trace = client.step(model_id, rng.random(64), target, 0.1, dry_run=True)
    svg = step_svg(trace, model)
    root = parse(svg)
    assert len(list(root.iter(f"{SVG}circle"))) == 138
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("class") == "connections"}
    assert len(groups["layer1-weights"].findall(f"{SVG}line")) == 4096
    assert len(groups["layer2-weights"].findall(f"{SVG}line")) == 640
    # Faded with their number, thin.
    assert float(groups["layer1-weights"].get("stroke-opacity")) < 0.1
    assert float(groups["layer2-weights"].get("stroke-opacity")) < 0.2
    assert max(float(line.get("stroke-width")) for line in root.iter(f"{SVG}line")) <= 1.8
    # No weight labels; tooltips on the 640 output connections, not on the 4096.
    assert not weight_labels(root)
    assert groups["layer1-weights"].find(f"{SVG}line").find(f"{SVG}title") is None
    assert groups["layer2-weights"].find(f"{SVG}line").find(f"{SVG}title") is not None
    # The ten outputs have their full labels; a hidden neuron shows its output or nothing.
    outputs = neuron_labels(root)
    assert len(outputs) == 10
    assert [o["target"] for o in outputs] == [fmt(v) for v in target]
    hidden_texts = {fmt(v, 5) for v in trace.layers[0].output}
    compact = [t for t in texts(root) if "\n" not in t and re.fullmatch(r"-?[\d.e-]+", t)]
    assert len(compact) >= 16 and set(compact) <= hidden_texts
    # Label boxes never overlap, and every neuron's numbers are in its tooltip.
    boxes = [tuple(float(r.get(a)) for a in ("x", "y", "width", "height"))
             for r in root.iter(f"{SVG}rect") if r.get("class") == "label-box"]
    for a, b in ((a, b) for n, a in enumerate(boxes) for b in boxes[n + 1:]):
        assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] \
            or b[1] + b[3] <= a[1], (a, b)
    for j in range(64):
        title = find_id(root, f"n1-{j + 1}").find(f"{SVG}title").text
        assert f"output{j + 1}_h = {fmt(trace.layers[0].output[j])}" in title
    assert "hover a neuron or a connection for its tooltip" in "\n".join(texts(root))
    assert float(root.get("height")) <= draw.MAX_HEIGHT + 200


def test_no_label_covers_another_in_small_networks(client, model_id):
    client.create_model([2, 4, 1], init="uniform", seed=0, model_id=model_id)
    for sample in ([0, 0], [1, 0], [0.3, 0.9]):
        trace = client.step(model_id, sample, [1], 0.5, dry_run=True)
        root = parse(step_svg(trace))
        boxes = []
        for group in root.iter(f"{SVG}g"):
            if group.get("class") not in ("neuron-labels", "weight-labels"):
                continue
            for holder in [group, *group.findall(f"{SVG}g")]:
                turn = re.match(r"translate\(([-\d.]+) ([-\d.]+)\) rotate\(([-\d.]+)\)",
                                holder.get("transform") or "")
                for rect in holder.findall(f"{SVG}rect"):
                    x, y, w, h = (float(rect.get(a)) for a in ("x", "y", "width", "height"))
                    box = draw._Box.upright(x, y, x + w, y + h)
                    if turn:
                        tx, ty, degrees = map(float, turn.groups())
                        box = box.turned(tx, ty, degrees)
                    boxes.append(box)
        assert len(boxes) >= 10
        for n, a in enumerate(boxes):
            for b in boxes[n + 1:]:
                assert not a.overlaps(b), (a, b)


def test_box_overlap_is_geometry():
    square = draw._Box.upright(0, 0, 10, 10)
    assert square.overlaps(draw._Box.upright(5, 5, 15, 15))
    assert not square.overlaps(draw._Box.upright(10, 0, 20, 10))  # touching is apart
    # A bar 2 wide, turned 45 degrees: through the square's corner (10, 0) it overlaps; moved
    # along x by 2 its edge is sqrt(2) - 1 = 0.41 away, so a gap of 0.5 counts it as close.
    bar = draw._Box.upright(-15, -1, 15, 1)
    assert square.overlaps(bar.turned(10, 0, 45))
    assert not square.overlaps(bar.turned(12, 0, 45))
    assert square.overlaps(bar.turned(12, 0, 45), gap=0.5)
    # The corners' bounding boxes would overlap, the turned bars do not.
    a = draw._Box.upright(-10, -1, 10, 1).turned(0, 0, 45)
    b = draw._Box.upright(-10, -1, 10, 1).turned(4, -4, 45)
    assert not a.overlaps(b)


def test_the_same_step_gives_the_same_bytes(client, model_id):
    model, trace = make_article(client, model_id)
    assert step_svg(trace, model) == step_svg(trace, model)
    bare = step_svg(trace)
    assert "Step on model" in bare and "article gradients" not in bare


def test_a_png_of_the_drawing_has_real_content(client, model_id, tmp_path):
    from PIL import Image

    model, trace = make_article(client, model_id)
    svg = step_svg(trace, model)
    root = parse(svg)
    path = tmp_path / "step.png"
    draw.write_step_drawing(path, trace, model)
    image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    assert image.size == (round(1.5 * float(root.get("width"))),
                          round(1.5 * float(root.get("height"))))
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    inked = (pixels < 235).any(axis=1).mean()
    assert 0.02 < inked < 0.6, inked  # lines, circles and text, on white
    blue = np.array([0x21, 0x66, 0xac])  # the positive weights' colour
    assert (np.abs(pixels - blue).sum(axis=1) < 40).sum() > 500
    colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
    assert len(colours) > 50  # antialiased lines and text, not a few flat fills


def test_picture_formats():
    assert draw.picture_format("a/b.svg") == "svg" and draw.picture_format("X.PNG") == "png"
    assert draw.picture_format("step") == "svg"  # SVG by default
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        draw.picture_format("step.pdf")


def test_without_cairosvg_a_png_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cairosvg", None)  # import cairosvg raises ImportError
    with pytest.raises(draw.MissingDependency) as caught:
        draw.png_from_svg("<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert str(caught.value).startswith("a PNG drawing needs cairosvg: pip install "
                                        "'jitnet[plot]'")


def test_without_the_cairo_library_a_png_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_cairo(name, *args, **kwargs):
        if name == "cairosvg":
            raise OSError("no library called \"cairo-2\" was found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cairo)
    with pytest.raises(draw.MissingDependency, match="apt-get install libcairo2"):
        draw.require_png()
