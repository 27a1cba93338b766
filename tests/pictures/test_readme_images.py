"""The README's two pictures are what `jitnet demo` writes: the demo is run and its pictures
compared byte for byte with docs/images; and the demo still draws the step without
matplotlib, saying what the plot needs."""

from __future__ import annotations

import pathlib
import sys

from jitnet.client import cli, demo

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"


def test_the_demo_writes_the_readme_pictures(tmp_path, capsys):
    code = cli.main(["demo", "--no-progress", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"the article's step, drawn: {tmp_path / demo.STEP_PICTURE}" in out
    assert f"XOR's loss and decision surface: {tmp_path / demo.TRAINING_PICTURE}" in out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in (demo.STEP_PICTURE, demo.TRAINING_PICTURE):
        assert f"(docs/images/{name})" in readme, f"the README does not show {name}"
        made = (tmp_path / name).read_bytes()
        assert made == (IMAGES / name).read_bytes(), (
            f"docs/images/{name} is not what the demo draws now: run "
            "`jitnet demo --out docs/images` and commit the pictures")


def test_without_matplotlib_the_demo_draws_the_step_and_says_what_the_plot_needs(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code = cli.main(["demo", "--no-progress", "--out", str(tmp_path / "new")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "new" / demo.STEP_PICTURE).is_file()
    assert not (tmp_path / "new" / demo.TRAINING_PICTURE).exists()
    assert ("The XOR training plot is left out: the training plot needs matplotlib: pip "
            "install 'jitnet[plot]'") in err
