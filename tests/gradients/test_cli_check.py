"""`jitnet step --check-gradients`: a short table of the server's numbers, alone or before the
step."""

from __future__ import annotations

import pytest

from jitnet.client import Client, cli
from jitnet.client.explain import fmt
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, article_request


@pytest.fixture
def run(server, capsys):
    target = f"127.0.0.1:{server.port}"

    def run(*argv):
        code = cli.main([*argv, "--target", target])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_the_article_table_lists_every_parameter_and_explains_article_mode(run, server):
    server.stub.CreateModel(article_request("article"), timeout=TIMEOUT)
    code, out, err = run("step", "article", "--input", "0,1", "--expect", "1",
                         "--check-gradients")
    assert code == 0, err
    with Client(f"127.0.0.1:{server.port}") as client:
        check = client.check_gradients("article", [0, 1], [1])
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:2] in
            ("w_", "b_")}
    assert len(rows) == 12  # every parameter of a small model
    assert rows["w_o[1,1]"][:2] == [fmt(check.layers[1].weights[0, 0]),
                                    fmt(check.layers[1].numeric_weights[0, 0])]
    assert rows["w_h[2,2]"][:2] == [fmt(check.layers[0].weights[1, 1]),
                                    fmt(check.layers[0].numeric_weights[1, 1])]
    assert rows["w_h[1,1]"] == ["0", "0", "0"]  # input 1 is 0
    assert f"h = {fmt(1e-4)}" in out
    assert f"largest relative error {fmt(check.max_relative_error, 3)}: ARTICLE" in out
    assert "Step" not in out.split("largest relative error")[1]  # no step without --lr
    model = server.stub.GetModel(pb.GetModelRequest(model_id="article"), timeout=TIMEOUT)
    assert model.model.version == 1


def test_a_big_model_gets_one_row_per_layer_then_the_step(run, server):
    with Client(f"127.0.0.1:{server.port}") as client:
        client.create_model([64, 64, 10], hidden="relu", output="softmax",
                            loss="cross-entropy", init="he", model_id="digits")
    values = ",".join(["0.5"] * 64)
    code, out, err = run("step", "digits", "--input", values, "--expect",
                         "1,0,0,0,0,0,0,0,0,0", "--check-gradients", "--epsilon", "1e-3",
                         "--lr", "0.1", "--dry-run")
    assert code == 0, err
    assert "(0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, ... 64 values)" in out
    assert not any(line.startswith("w_") for line in out.splitlines())
    layer_rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["h"],
                                                                                  ["o"])]
    assert [(r[0], r[1]) for r in layer_rows[:2]] == [("h", "4160"), ("o", "650")]
    assert "the backward pass agrees with the finite differences" in out
    assert "h = 0.001" in out
    # the step's table follows the check's
    assert out.index("largest relative error") < out.index("dry run, weights unchanged")


def test_without_a_learning_rate_or_the_check_it_is_a_usage_error(run):
    code, out, err = run("step", "m", "--input", "0,1", "--expect", "1")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: --learning-rate is required (the article uses "
                                        "0.001), unless --check-gradients alone"]


def test_over_the_limit_is_one_line_and_exit_7(make_server, capsys):
    server = make_server(limits=dict(max_gradient_check_passes=10))
    server.stub.CreateModel(article_request("article"), timeout=TIMEOUT)
    code = cli.main(["step", "article", "--input", "0,1", "--expect", "1", "--check-gradients",
                     "--target", f"127.0.0.1:{server.port}"])
    err = capsys.readouterr().err
    assert code == 7
    assert len(err.strip().splitlines()) == 1 and "JITNET_MAX_GRADIENT_CHECK_PASSES" in err
