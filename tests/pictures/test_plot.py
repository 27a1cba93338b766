"""The training plot (client/plot.py): the loss curve on a log scale, the decision surface of a
model with two inputs (one output: its value and the 0.5 line; several: the class), none for
other models; SVG parses and holds what it should, PNG is not blank, the same bytes every time;
without matplotlib a plot says what to install, and importing the client never loads it."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest

from jitnet.client import datasets, plot
from jitnet.client.draw import MissingDependency
from jitnet.client.explain import fmt
from jitnet.client.results import Progress

from .conftest import SVG, find_id, parse, texts


def fake_history(epochs=(10, 20, 30, 40), start=0.3):
    return [Progress(e, epochs[-1], start / (1 + e), 4 * e, 0.01 * e, e // 10 + 1,
                     e == epochs[-1]) for e in epochs]


def vertices(path_d: str) -> int:
    return len(re.findall(r"[ML]\s", path_d))


def train_xor(client, model_id):
    client.create_model([2, 4, 1], init="uniform", seed=0, model_id=model_id)
    data = datasets.xor()
    history = list(client.train(model_id, data.inputs, data.targets, epochs=3000,
                                learning_rate=0.5, target_loss=0.001, report_every=30))
    return data, history


def test_xors_plot_holds_the_curve_the_surface_and_the_points(client, model_id, tmp_path):
    data, history = train_xor(client, model_id)
    path = tmp_path / "train.svg"
    def predict(points):
        return client.predict(model_id, points)
    plot.write_training_plot(path, history, data.inputs, data.targets, predict, title="XOR")
    svg = path.read_text(encoding="utf-8")
    root = parse(svg)
    curve = find_id(root, "loss-curve").find(f"{SVG}path")
    assert vertices(curve.get("d")) == len(history) > 20
    assert find_id(root, "decision-surface") is not None
    assert find_id(root, "decision-boundary") is not None
    assert len(find_id(root, "training-points").findall(f".//{SVG}use")) == 4
    words = "\n".join(texts(root))
    assert f"loss {fmt(history[-1].loss, 4)} after {history[-1].epoch} epochs" in words
    assert "(log scale)" in words and "input 1" in words and "input 2" in words
    assert words.count("target 1") == 2 and words.count("target 0") == 2
    figure = plot.training_figure(history, data.inputs, data.targets, predict)
    assert figure.axes[0].get_yscale() == "log"
    # No date or version: the same history and model give the same bytes.
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg
    again = tmp_path / "again.svg"
    plot.write_training_plot(again, history, data.inputs, data.targets, predict, title="XOR")
    assert again.read_bytes() == path.read_bytes()


def test_the_surface_is_the_models_output_over_the_inputs_range():
    seen = []

    def output_is_input1(points):  # a model whose output is its first input
        seen.append(points)
        return points[:, :1]

    inputs = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    figure = plot.training_figure(fake_history(), inputs, np.array([[0], [1], [1], [0.]]),
                                  output_is_input1)
    (points,) = seen
    assert points.shape == (plot.GRID_STEPS ** 2, 2)
    np.testing.assert_allclose(points.min(axis=0), [-0.15, -0.15])
    np.testing.assert_allclose(points.max(axis=0), [1.15, 1.15])
    (boundary,) = figure.findobj(lambda a: a.get_gid() == "decision-boundary")
    x = np.concatenate([p.vertices[:, 0] for p in boundary.get_paths()])
    assert x.size >= 2 and np.allclose(x, 0.5)  # where the output crosses 0.5


def test_several_outputs_show_the_class(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(30, 2))
    targets = np.eye(3)[(inputs[:, 0] > 0).astype(int) + (inputs[:, 1] > 0)]

    def by_quadrant(points):
        return np.eye(3)[(points[:, 0] > 0).astype(int) + (points[:, 1] > 0)]

    path = tmp_path / "classes.svg"
    plot.write_training_plot(path, fake_history(), inputs, targets, by_quadrant)
    root = parse(path.read_text(encoding="utf-8"))
    assert find_id(root, "decision-surface") is not None
    assert find_id(root, "decision-boundary") is None
    assert len(find_id(root, "training-points").findall(f".//{SVG}use")) == 30
    assert "class by the largest output" in "\n".join(texts(root))
    assert "target" not in "\n".join(texts(root))  # more points than are labelled


def test_a_model_without_two_inputs_gets_the_curve_alone(tmp_path):
    def never(points):
        raise AssertionError("no surface for three inputs")

    path = tmp_path / "three.svg"
    history = fake_history(tuple(range(5, 505, 5)))
    plot.write_training_plot(path, history, np.zeros((6, 3)), np.zeros((6, 1)), never,
                             title="three inputs")
    root = parse(path.read_text(encoding="utf-8"))
    assert find_id(root, "decision-surface") is None
    assert vertices(find_id(root, "loss-curve").find(f"{SVG}path").get("d")) == 100
    assert len(plot.training_figure(history, np.zeros((6, 3))).axes) == 1
    assert "three inputs" in "\n".join(texts(root))


def test_a_png_of_the_plot_has_real_content(client, model_id, tmp_path):
    from PIL import Image

    data, history = train_xor(client, model_id)
    path = tmp_path / "train.png"
    plot.write_training_plot(path, history, data.inputs, data.targets,
                             lambda points: client.predict(model_id, points))
    image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    assert image.size == (1100, 440)
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    assert (pixels < 235).any(axis=1).mean() > 0.2  # the surface fills half the figure
    red, blue = np.array([0x67, 0x00, 0x1f]), np.array([0x05, 0x30, 0x61])  # RdBu_r's ends
    def near(c):
        return (np.abs(pixels - c).sum(axis=1) < 120).sum()
    assert near(red) > 1000 and near(blue) > 1000  # outputs near 1 and near 0 both shown


def test_no_history_is_refused():
    with pytest.raises(ValueError, match="no progress"):
        plot.training_figure([])


def test_without_matplotlib_a_plot_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependency) as caught:
        plot.write_training_plot(tmp_path / "x.svg", fake_history())
    assert str(caught.value) == "the training plot needs matplotlib: pip install 'jitnet[plot]'"
    assert not (tmp_path / "x.svg").exists()


def test_the_client_imports_neither_matplotlib_nor_cairosvg():
    script = ("import sys, jitnet.client, jitnet.client.cli, jitnet.client.draw, "
              "jitnet.client.plot, jitnet.client.demo\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('matplotlib', 'cairosvg', 'cairocffi', 'PIL')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
