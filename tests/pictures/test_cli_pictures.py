"""`jitnet step --draw FILE` and `jitnet train --plot FILE`: the picture is written and said so;
a bad name, a missing folder or a missing optional package is one line and no work done."""

from __future__ import annotations

import sys

import pytest

from jitnet.client import cli, datasets

from .conftest import SVG, find_id, parse, texts


@pytest.fixture
def run(address, capsys):
    def run(*argv):
        code = cli.main([*argv, "--target", address])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def article(client, model_id):
    net = datasets.article()
    client.create_model(net.layer_sizes, layers=net.layers, model_id=model_id,
                        **net.architecture)


def test_step_draw_writes_the_svg_after_the_table(run, client, model_id, tmp_path):
    article(client, model_id)
    path = tmp_path / "step.svg"
    code, out, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001",
                         "--draw", str(path))
    assert code == 0, err
    assert out.rstrip().endswith(f"drew the step in {path}")
    root = parse(path.read_text(encoding="utf-8"))
    words = "\n".join(texts(root))
    assert "stored as version 2" in words and "net 0.6" in words
    assert client.get_model(model_id).version == 2


def test_step_draw_png(run, client, model_id, tmp_path):
    article(client, model_id)
    path = tmp_path / "step.png"
    code, _, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001",
                       "--dry-run", "--draw", str(path))
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name,words", [("step.pdf", "written as .svg or .png"),
                                        ("no/such/folder/step.svg", "does not exist")])
def test_a_bad_picture_name_is_refused_before_the_step(run, client, model_id, tmp_path, name,
                                                       words):
    article(client, model_id)
    code, out, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001",
                         "--draw", str(tmp_path / name))
    assert code == 2 and out == ""
    assert words in one_line(err)
    assert client.get_model(model_id).version == 1  # not stepped


def test_without_cairosvg_a_png_drawing_is_refused_before_the_step(run, client, model_id,
                                                                   tmp_path, monkeypatch):
    article(client, model_id)
    monkeypatch.setitem(sys.modules, "cairosvg", None)
    code, out, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001",
                         "--draw", str(tmp_path / "step.png"))
    assert code == 1 and out == ""
    assert one_line(err).startswith("error: a PNG drawing needs cairosvg: pip install "
                                    "'jitnet[plot]'")
    assert client.get_model(model_id).version == 1
    # An SVG needs nothing.
    code, _, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001",
                       "--draw", str(tmp_path / "step.svg"))
    assert code == 0, err


def test_draw_needs_a_step(run, model_id, tmp_path):
    code, _, err = run("step", model_id, "--input", "0,1", "--expect", "1", "--check-gradients",
                       "--draw", str(tmp_path / "x.svg"))
    assert code == 2 and "--draw draws a step: give its --learning-rate" in one_line(err)


def test_train_plot_asks_for_about_100_reports(run, client, model_id, tmp_path):
    client.create_model([2, 4, 1], init="uniform", seed=0, model_id=model_id)
    path = tmp_path / "train.svg"
    code, out, err = run("train", model_id, "--data", "xor", "--epochs", "500", "--lr", "0.5",
                         "--no-progress", "--plot", str(path))
    assert code == 0, err
    assert out.splitlines()[-1] == f"plotted the training in {path}"
    root = parse(path.read_text(encoding="utf-8"))
    curve = find_id(root, "loss-curve").find(f"{SVG}path").get("d")
    assert curve.count("L") + 1 == 100  # one point every 5 epochs
    assert find_id(root, "decision-surface") is not None
    assert f"model '{model_id}' trained on xor" in "\n".join(texts(root))


def test_train_plot_png_of_a_model_without_two_inputs(run, client, model_id, tmp_path):
    client.create_model([3, 1], model_id=model_id)
    data = tmp_path / "data.csv"
    data.write_text("a,b,c,t\n0,0,1,0\n0,1,1,1\n1,1,0,1\n", encoding="utf-8")
    path = tmp_path / "train.png"
    code, _, err = run("train", model_id, "--csv", str(data), "--epochs", "20", "--lr", "0.5",
                       "--report-every", "2", "--no-progress", "--plot", str(path))
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_train_plot_is_refused_before_training(run, client, model_id,
                                                                  tmp_path, monkeypatch):
    client.create_model([2, 4, 1], model_id=model_id)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run("train", model_id, "--data", "xor", "--epochs", "10", "--lr", "0.5",
                         "--plot", str(tmp_path / "train.svg"))
    assert code == 1 and out == ""
    assert one_line(err) == ("error: the training plot needs matplotlib: pip install "
                             "'jitnet[plot]'")
    assert client.get_model(model_id).version == 1  # not trained
