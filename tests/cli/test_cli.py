"""The `jitnet` command through main(argv), against the session's server on port 0."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from jitnet.client import Progress, cli
from tests.support.rpc import XOR


@pytest.fixture
def run(address, capsys):
    """run(*argv) -> (exit code, stdout, stderr), talking to the test server."""
    def run(*argv, target=True):
        code = cli.main([*argv, "--target", address] if target else list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_create_train_predict(run, model_id):
    code, out, err = run("create", "--id", model_id, "--layers", "2,4,1", "--init", "uniform")
    assert code == 0 and out.startswith(f"created model '{model_id}': 2-4-1 sigmoid/sigmoid mse")
    code, out, err = run("train", model_id, "--data", "xor", "--epochs", "5000",
                         "--learning-rate", "0.5", "--target-loss", "0.001")
    assert code == 0, err
    assert f"trained '{model_id}'" in out and "reached the target loss 0.001" in out
    code, out, _ = run("predict", model_id, "--input", "0,1", "--input", "1,1")
    assert code == 0
    first, second = (float(line) for line in out.split())
    assert first > 0.5 > second
    code, out, _ = run("predict", model_id, "--data", "xor")
    assert code == 0 and "accuracy 4/4 = 100.0% on xor" in out
    assert "0 1 -> " in out and "(target 1)" in out


def test_step_explain_prints_the_article_arithmetic(run, model_id):
    assert run("create", "--article", "--id", model_id)[0] == 0
    code, out, err = run("step", model_id, "--input", "0,1", "--expect", "1",
                         "--learning-rate", "0.001", "--dry-run", "--explain")
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    for expected in [
        "net1_h = 0 * 0.2 + 1 * 0.6 = 0.6",
        "net4_h = 0 * 0.8 + 1 * 0.3 = 0.3",
        "output1_h = f(net1_h) = f(0.6) = 0.645656",  # the article's 0.64 (0.6457)
        "output4_h = f(net4_h) = f(0.3) = 0.574443",
        "net_o = 0.645656 * 0.6 + 0.668188 * 0.7 + 0.71095 * 0.3 + 0.574443 * 0.4 = 1.29819",
        "output_o = f(net_o) = f(1.29819) = 0.78553",  # the article's 0.78 (0.7855)
        "error_o = target - output_o = 1 - 0.78553 = 0.21447",
        "delta_o = deriv(output_o) * error_o = deriv(0.78553) * 0.21447 = 0.215079 * 0.21447 "
        "= 0.0461281",
        "error1_h = delta_o * 0.6 = 0.0461281 * 0.6 = 0.0276769",
        "delta1_h = deriv(output1_h) * error1_h = deriv(0.645656) * 0.0276769 = 0.225654 * "
        "0.0276769 = 0.00624541",
        "w_o[1,1] = old + output1_h * delta_o * learning_rate = 0.6 + 0.645656 * 0.0461281 * "
        "0.001 = 0.60003",
        "w_h[1,2] = old + input2 * delta1_h * learning_rate = 0.6 + 1 * 0.00624541 * 0.001 = "
        "0.600006",
    ]:
        assert expected in lines, f"missing: {expected}\n{out}"
    assert "dry run" in out


def test_step_table_and_real_step(run, model_id):
    run("create", "--article", "--id", model_id)
    code, out, _ = run("step", model_id, "--input", "0,1", "--expect", "1", "--lr", "0.001")
    assert code == 0
    header, *rows, last = out.splitlines()
    assert header.split()[:6] == ["layer", "neuron", "net", "output", "error", "delta"]
    assert len(rows) == 5 and rows[-1].split()[:4] == ["o", "1", "1.29819", "0.78553"]
    assert "weights updated; model version 2" in last


def test_models_list_show_delete(run, model_id):
    run("create", "--id", model_id, "--layers", "3,2", "--output", "linear", "--no-bias")
    code, out, _ = run("models", "list")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["ID", "LAYERS"]
    assert any(line.split()[:2] == [model_id, "3-2"] for line in out.splitlines())
    code, out, _ = run("models", "show", model_id, "--weights")
    assert code == 0
    assert f"id:             {model_id}" in out and "3-2 sigmoid/linear mse, no bias" in out
    assert "weights [2, 3]" in out and "biases" not in out
    code, out, _ = run("models", "delete", model_id)
    assert code == 0 and out.strip() == f"deleted model '{model_id}'"
    code, out, err = run("models", "show", model_id)
    assert code == 3 and out == ""
    assert _one_error_line(err) == f"error: NOT_FOUND: model '{model_id}' not found"


def test_errors_are_one_line_with_distinct_exit_codes(run, model_id):
    code, _, err = run("predict", model_id, "--input", "0,1")
    assert code == 3 and _one_error_line(err).startswith("error: NOT_FOUND: ")
    # A bad argument, caught by the parser.
    code, _, err = run("train", model_id, "--data", "xor", "--epochs", "many", "--lr", "0.1")
    assert code == 2 and "--epochs" in _one_error_line(err)
    code, _, err = run("create", "--layers", "2,x,1")
    assert code == 2 and "layer sizes" in _one_error_line(err)
    code, _, err = run("bogus-command")
    assert code == 2 and _one_error_line(err)
    # A bad argument, caught by the server.
    run("create", "--id", model_id, "--layers", "2,1")
    code, _, err = run("predict", model_id, "--input", "1,2,3")
    assert code == 2 and _one_error_line(err).startswith("error: INVALID_ARGUMENT: ")
    code, _, err = run("create", "--id", model_id, "--layers", "2,1")
    assert code == 4 and _one_error_line(err).startswith("error: ALREADY_EXISTS: ")
    # Two sources of data at once.
    code, _, err = run("predict", model_id, "--data", "xor", "--input", "0,1")
    assert code == 2 and "give one of" in _one_error_line(err)


def test_connection_flags_before_or_after_the_command_and_from_the_environment(
        address, capsys, monkeypatch):
    assert cli.main(["--target", address, "health"]) == 0
    assert cli.main(["health", "--target", address, "--timeout", "5"]) == 0
    monkeypatch.setenv("JITNET_TARGET", address)
    assert cli.main(["health"]) == 0
    assert capsys.readouterr().out.split() == ["SERVING"] * 3


def test_health_waits_and_exit_codes(make_server, capsys):
    """NOT_SERVING while the server warms up (exit 1, also after --wait runs out), SERVING once
    it is ready (--wait returns as soon as it is), UNAVAILABLE when nothing answers."""
    ready = threading.Event()
    server = make_server(warm_up=lambda: ready.wait(30), wait_ready=False)
    target = ["--target", server.address]
    assert cli.main(["health", *target]) == 1
    assert cli.main(["health", *target, "--wait", "0.3"]) == 1
    assert capsys.readouterr().out.split() == ["NOT_SERVING"] * 2
    threading.Timer(0.3, ready.set).start()
    assert cli.main(["health", *target, "--wait", "20"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    server.close()
    assert cli.main(["health", *target, "--timeout", "2"]) == 8
    assert _one_error_line(capsys.readouterr().err).startswith("error: UNAVAILABLE: ")


def test_train_and_predict_from_files(run, model_id, tmp_path):
    np.save(tmp_path / "x.npy", XOR.inputs)
    np.save(tmp_path / "y.npy", XOR.targets.ravel())
    (tmp_path / "xor.csv").write_text("x1,x2,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    run("create", "--id", model_id, "--layers", "2-4-1", "--init", "uniform")
    code, out, err = run("train", model_id, "--inputs", str(tmp_path / "x.npy"), "--targets",
                         str(tmp_path / "y.npy"), "--epochs", "10", "--lr", "0.5")
    assert code == 0 and "10 epochs, 40 iterations" in out, err
    code, out, err = run("train", model_id, "--csv", str(tmp_path / "xor.csv"),
                         "--target-columns", "1", "--epochs", "5000", "--lr", "0.5",
                         "--target-loss", "0.001", "--no-progress")
    assert code == 0 and err == ""
    code, out, _ = run("predict", model_id, "--csv", str(tmp_path / "xor.csv"),
                       "--target-columns", "1")
    assert code == 0 and "accuracy 4/4" in out
    code, out, _ = run("predict", model_id, "--inputs", str(tmp_path / "x.npy"))
    assert code == 0 and len(out.split()) == 4
    code, _, err = run("predict", model_id, "--inputs", str(tmp_path / "missing.npy"))
    assert code == 2 and "missing.npy" in _one_error_line(err)


def test_create_with_weights_file(run, model_id, tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps([{"weights": [[1, 2]], "biases": [0.5]}]))
    code, out, err = run("create", "--id", model_id, "--layers", "2,1", "--output", "linear",
                         "--weights", str(path))
    assert code == 0, err
    code, out, _ = run("predict", model_id, "--input", "1,1")
    assert float(out) == pytest.approx(3.5)


def test_missing_scikit_learn_is_one_clear_line(run, model_id, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    code, _, err = run("train", model_id, "--data", "digits", "--epochs", "1", "--lr", "0.1")
    assert code == 2
    assert _one_error_line(err) == ("error: the digits data set needs scikit-learn: "
                                    "pip install scikit-learn")


def test_serve_reports_a_bad_setting_in_one_line(capsys):
    assert cli.main(["serve", "--workers", "0", "--port", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--workers" in line and "JITNET_WORKERS" in line


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert cli.main(["step", "--help"]) == 0
    assert "--explain" in capsys.readouterr().out


def test_progress_bar_draws_one_line_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = cli.ProgressBar(100, stream=stream)
    for epoch in (10, 50, 100):
        bar.update(Progress(epoch, 100, 1.0 / epoch, epoch * 4, 0.5, epoch, epoch == 100))
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "epoch 100/100 [########################] loss 0.01" in text
    quiet = io.StringIO()  # not a terminal: nothing for a short run
    bar = cli.ProgressBar(100, stream=quiet)
    bar.update(Progress(100, 100, 0.1, 400, 0.5, 2, True))
    bar.close()
    assert quiet.getvalue() == ""


def test_demo_runs_end_to_end(capsys, tmp_path):
    pictures = str(tmp_path / "pictures")  # not the current directory
    code = cli.main(["demo", "--data-dir", str(tmp_path), "--out", pictures])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "net1_h = 0 * 0.2 + 1 * 0.6 = 0.6" in out
    assert "output_o = f(net_o) = f(1.29819) = 0.78553" in out
    rows = [line.split() for line in out.splitlines() if line.strip().endswith(("ok", "WRONG"))]
    assert len(rows) == 4 and all(row[-1] == "ok" for row in rows)
    for _x1, _x2, target, output, _ in rows:
        assert (float(output) > 0.5) == (target == "1")
    # Run again on the same directory: the ids are taken, the demo still works.
    assert cli.main(["demo", "--data-dir", str(tmp_path), "--out", pictures]) == 0


def test_the_client_and_predict_do_not_import_the_service_or_numba(address, client, model_id):
    client.create_model([2, 1], model_id=model_id)
    script = textwrap.dedent(f"""
        import sys
        import jitnet.client
        from jitnet.client import cli
        code = cli.main(["predict", {model_id!r}, "--input", "0,1", "--target", {address!r}])
        assert code == 0, code
        loaded = [m for m in sys.modules if m == "numba" or m.startswith(("numba.",
                  "jitnet.service", "sklearn"))]
        assert not loaded, loaded
        print("clean")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "clean"


def test_train_with_adam_and_early_stopping_says_why_it_stopped(run, model_id):
    code, _, err = run("create", "--id", model_id, "--layers", "4,8,3", "--hidden", "tanh",
                       "--output", "softmax", "--loss", "cross-entropy")
    assert code == 0, err
    code, out, err = run("train", model_id, "--data", "iris", "--epochs", "2000",
                         "--learning-rate", "0.01", "--batch-size", "16", "--optimizer", "adam",
                         "--validation-fraction", "0.2", "--early-stopping", "3",
                         "--min-delta", "0.01", "--class-weights", "balanced", "--no-progress")
    assert code == 0, err
    assert "stopped early: no improvement since epoch" in out and "kept epoch" in out, out
    assert "validation loss" in out
    epochs = int(out.split(f"trained '{model_id}': ")[1].split(" epochs")[0])
    assert epochs < 2000
