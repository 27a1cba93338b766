"""The page's JSON API through urllib against a real server: every route does what its gRPC
calls do (the answers are compared with the same calls made directly over gRPC), and the
models it makes are real ones in the store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jitnet.client import Client, datasets, explain

from .conftest import XOR_INPUTS, XOR_TARGETS


@pytest.fixture
def grpc(page_server):
    with Client(page_server.address) as client:
        yield client


def test_the_page_and_its_files(page):
    index = page.get("/")
    assert index.status == 200 and index.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/main.js"></script>' in index.body
    csp = index.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe" not in csp
    assert index.headers["X-Content-Type-Options"] == "nosniff"
    script = page.get("/main.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert page.get("/index.html").body == index.body
    head = page.call("HEAD", "/style.css")
    assert head.status == 200 and head.body == "" and int(head.headers["Content-Length"]) > 100
    for missing in ("/nope.js", "/../service/web/api.py", "/%2e%2e/server.py", "/static/main.js"):
        answer = page.get(missing)
        assert answer.status == 404 and answer.error["code"] == "NOT_FOUND", missing
    answer = page.post("/", {})
    assert answer.status == 405 and answer.headers["Allow"] == "GET, HEAD"


def test_info_names_the_grpc_port_and_health(page, page_server):
    info = page.get("/api/info").body
    assert info["grpc_target"] == f"127.0.0.1:{page_server.port}"
    assert info["health"] == "SERVING" and info["token_required"] is False
    assert "xor" in info["datasets"] and "learning_rate" in info["train_options"]


def test_models_created_listed_read_and_deleted(page, grpc):
    made = page.create(seed=3)
    assert made["version"] == 1 and made["layer_sizes"] == [2, 4, 1]
    stored = grpc.get_model(made["id"], include_weights=True)  # a real model in the store
    for (w, b), layer in zip(stored.layers, made["layers"], strict=True):
        assert w.tolist() == layer["weights"] and b.tolist() == layer["biases"]
    listed = page.get("/api/models").body["models"]
    assert [m["id"] for m in listed] == [made["id"]] and "layers" not in listed[0]
    read = page.get(f"/api/models/{made['id']}").body
    assert read["layers"] == made["layers"] and read["describe"] == "2-4-1 sigmoid/sigmoid mse"
    assert page.call("DELETE", f"/api/models/{made['id']}", {}).body == {"deleted": made["id"]}
    assert grpc.list_models() == []
    named = page.create(model_id="mine", hidden="tanh", bias=False)
    assert named["id"] == "mine" and named["hidden"] == "tanh" and named["bias"] is False
    assert all(layer["biases"] is None for layer in named["layers"])


def test_the_article_network_in_one_request(page):
    made = page.post("/api/models", {"article": True}).body
    net = datasets.article()
    assert made["layer_sizes"] == net.layer_sizes and made["gradient_mode"] == "article"
    assert [layer["weights"] for layer in made["layers"]] == [w.tolist() for w in net.layers]


def test_step_is_the_article_step_with_its_explanation_and_drawing(page, grpc):
    model_id = page.post("/api/models", {"article": True}).body["id"]
    step = page.post(f"/api/models/{model_id}/step",
                     {"input": [0, 1], "target": [1], "learning_rate": 0.001}).body
    hidden, output = step["layers"]
    assert hidden["net"] == pytest.approx([0.6, 0.7, 0.9, 0.3])
    assert [math.floor(v * 100) / 100 for v in hidden["output"]] == [0.64, 0.66, 0.71, 0.57]
    assert output["weights"][0] == pytest.approx([0.60003, 0.70003, 0.30003, 0.40003], abs=1e-5)
    assert output["weights_before"] == datasets.ARTICLE_OUTPUT
    assert step["version"] == 2 and grpc.get_model(model_id).version == 2  # committed
    # The explanation is the command line's, for the same step replayed as a dry run from
    # the same weights (a second model).
    again = grpc.create_model([2, 4, 1], layers=datasets.article().layers, model_id="again",
                              **datasets.article().architecture)
    trace = grpc.step("again", [0, 1], [1], 0.001, dry_run=True)
    assert step["explain"] == explain.explain(trace, again).replace(
        "'again'", f"'{model_id}'").replace(
        "a dry run: the stored weights are unchanged (version 1)",
        "the updated weights are stored as version 2")
    assert "net1_h = 0 * 0.2 + 1 * 0.6 = 0.6" in step["explain"]
    assert step["svg"].startswith("<svg") and "net 0.6" in step["svg"]
    dry = page.post(f"/api/models/{model_id}/step", {"input": [0, 1], "target": [1],
                                                     "learning_rate": 0.001, "dry_run": True})
    assert dry.body["dry_run"] is True and dry.body["version"] == 2


def test_predict_frame_and_activations_answer_what_grpc_answers(page, grpc):
    model_id = page.create(seed=1)["id"]
    inputs = [[0.0, 0.0], [0.25, 1.0], [-1.0, 2.0]]
    predicted = page.post(f"/api/models/{model_id}/predict", {"inputs": inputs}).body
    assert predicted["outputs"] == grpc.predict(model_id, inputs).tolist()
    assert predicted["version"] == 1
    frame = page.get(f"/api/models/{model_id}/frame?steps=3&x=-1,1&y=0,2").body
    assert frame["model"]["layers"] == page.get(f"/api/models/{model_id}").body["layers"]
    surface = frame["surface"]
    assert (surface["steps"], surface["x"], surface["y"]) == (3, [-1, 1], [0, 2])
    # Row by row from the lowest y, each from the lowest x; rounded to 4 decimals.
    grid = [[x, y] for y in (0.0, 1.0, 2.0) for x in (-1.0, 0.0, 1.0)]
    np.testing.assert_allclose(surface["outputs"], grpc.predict(model_id, grid), atol=5e-5)
    assert page.get(f"/api/models/{model_id}/frame").body.keys() == {"model"}
    seen = page.get(f"/api/models/{model_id}/activations?input=0.25,1").body
    trace = grpc.step(model_id, [0.25, 1], [0], 0.001, dry_run=True)
    assert [layer["output"] for layer in seen["layers"]] == [t.output.tolist()
                                                            for t in trace.layers]
    assert [layer["net"] for layer in seen["layers"]] == [t.net.tolist() for t in trace.layers]
    assert grpc.get_model(model_id).version == 1  # reads change nothing


def test_train_streams_its_progress_as_newline_delimited_json(page, grpc):
    model_id = page.create(seed=0)["id"]
    answer = page.post(f"/api/models/{model_id}/train",
                       {"inputs": XOR_INPUTS, "targets": XOR_TARGETS, "epochs": 50,
                        "learning_rate": 0.5, "report_every": 10})
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/x-ndjson"
    assert answer.headers["Transfer-Encoding"] == "chunked"
    lines = [json.loads(line) for line in answer.body.splitlines()]
    assert [p["epoch"] for p in lines] == [10, 20, 30, 40, 50]
    assert [p["version"] for p in lines] == [2, 3, 4, 5, 6] and lines[-1]["done"] is True
    assert all(p["epochs"] == 50 and p["loss"] > 0 for p in lines)
    model = grpc.get_model(model_id)
    assert (model.version, model.epochs_trained, model.last_loss) == (6, 50, lines[-1]["loss"])
    # The same training over gRPC from the same weights gives the same losses.
    twin = grpc.create_model([2, 4, 1], init="uniform", seed=0)
    direct = list(grpc.train(twin.id, XOR_INPUTS, XOR_TARGETS, epochs=50, learning_rate=0.5,
                             report_every=10))
    assert [p.loss for p in direct] == [p["loss"] for p in lines]


def test_data_sets(page):
    moons = page.post("/api/datasets", {"kind": "moons", "points": 40, "noise": 0.05,
                                        "validation_fraction": 0.25, "seed": 2}).body
    assert moons["name"] == "moons"
    assert (len(moons["inputs"]), len(moons["validation_inputs"])) == (30, 10)
    assert page.post("/api/datasets", {"kind": "moons", "points": 40, "noise": 0.05,
                                       "validation_fraction": 0.25, "seed": 2}).body == moons
    xor = page.post("/api/datasets", {}).body  # the default: the article's XOR
    assert (xor["inputs"], xor["targets"]) == (XOR_INPUTS, XOR_TARGETS)
    csv = page.post("/api/datasets", {"kind": "csv", "csv": "a,b,c\n1,2,3\n4,5,6",
                                      "target_columns": 2}).body
    assert (csv["inputs"], csv["targets"]) == ([[1], [4]], [[2, 3], [5, 6]])
