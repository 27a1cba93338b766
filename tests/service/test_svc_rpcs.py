"""Every RPC of api.md through a real in-process server, and every row of its error table."""

from __future__ import annotations

import math
import threading
from collections import defaultdict

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (ARTICLE_HIDDEN, ARTICLE_OUTPUT, TIMEOUT, XOR_X, XOR_Y, array,
                         article_request, code_of, create, error_of, long_train_request,
                         tensor, wait_for)

C = grpc.StatusCode


def _trunc2(values):
    return [math.floor(v * 100) / 100 for v in values]


# -- the article's worked example ---------------------------------------------------------------


def test_article_example_in_article_mode(stub):
    created = stub.CreateModel(article_request(), timeout=TIMEOUT).model
    assert created.version == 1 and created.architecture.bias is False
    step = stub.Step(pb.StepRequest(model_id="article", input=[0, 1], target=[1],
                                    learning_rate=0.001), timeout=TIMEOUT)
    hidden, output = step.layers
    assert hidden.net == pytest.approx([0.6, 0.7, 0.9, 0.3])
    assert _trunc2(hidden.output) == [0.64, 0.66, 0.71, 0.57]
    assert _trunc2(output.output) == [0.78]
    # The article truncates at every line and computes on with the truncated numbers, so the
    # lines after the outputs agree only roughly with exact arithmetic.
    assert output.net == pytest.approx([1.28], abs=0.02)
    assert output.error == pytest.approx([0.22], abs=0.01)
    assert output.delta == pytest.approx([0.04], abs=0.01)
    assert hidden.error == pytest.approx([0.024, 0.028, 0.012, 0.016], abs=0.005)
    assert hidden.delta == pytest.approx([0.005, 0.006, 0.002, 0.003], abs=0.002)
    new_out = array(output.updated.weights).ravel()
    assert new_out == pytest.approx([0.60003, 0.70003, 0.30003, 0.40003], abs=1e-5)
    assert array(output.before.weights).tolist() == ARTICLE_OUTPUT
    assert array(hidden.before.weights).tolist() == ARTICLE_HIDDEN
    assert step.model_version == 2
    model = stub.GetModel(pb.GetModelRequest(model_id="article", include_weights=True),
                          timeout=TIMEOUT).model
    assert (model.version, model.iterations) == (2, 1)
    assert model.last_loss == pytest.approx(step.loss)
    np.testing.assert_array_equal(array(model.layers[1].weights).ravel(), new_out)


def test_article_example_in_exact_mode_is_the_true_gradient_step(stub):
    stub.CreateModel(article_request("exact", pb.GRADIENT_MODE_EXACT), timeout=TIMEOUT)
    step = stub.Step(pb.StepRequest(model_id="exact", input=[0, 1], target=[1],
                                    learning_rate=0.001), timeout=TIMEOUT)
    # numpy: the gradient of 0.5 (t - y)^2 through two sigmoid layers, one descent step
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    w1, w2 = np.array(ARTICLE_HIDDEN), np.array(ARTICLE_OUTPUT)
    x, t, lr = np.array([0.0, 1.0]), np.array([1.0]), 0.001
    h = sig(w1 @ x)
    y = sig(w2 @ h)
    d2 = (t - y) * y * (1 - y)
    d1 = (w2.T @ d2) * h * (1 - h)
    np.testing.assert_allclose(array(step.layers[1].updated.weights), w2 + lr * np.outer(d2, h),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(array(step.layers[0].updated.weights), w1 + lr * np.outer(d1, x),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(step.layers[1].delta, d2, rtol=1e-12)
    assert step.loss == pytest.approx(0.5 * float(((t - y) ** 2).sum()), rel=1e-12)


# -- CreateModel, GetModel, ListModels, DeleteModel ----------------------------------------------


def test_create_defaults_seed_and_fresh_id(stub):
    first = stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[3, 5, 2]), seed=7), timeout=TIMEOUT).model
    assert first.id  # the server made one
    arch = first.architecture
    assert (arch.hidden_activation, arch.output_activation, arch.loss, arch.gradient_mode) == (
        pb.ACTIVATION_SIGMOID, pb.ACTIVATION_SIGMOID, pb.LOSS_MSE, pb.GRADIENT_MODE_EXACT)
    assert arch.HasField("bias") and arch.bias is True
    assert first.parameter_count == 3 * 5 + 5 + 5 * 2 + 2
    assert len(first.layers) == 2  # weights come back on create
    assert not array(first.layers[0].biases).any()  # Xavier starts biases at zero
    second = stub.CreateModel(pb.CreateModelRequest(
        model_id="again", architecture=pb.Architecture(layer_sizes=[3, 5, 2]), seed=7),
        timeout=TIMEOUT).model
    for a, b in zip(first.layers, second.layers):  # same seed, same weights
        np.testing.assert_array_equal(array(a.weights), array(b.weights))
    uniform = stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[3, 5, 2]), init=pb.INIT_UNIFORM, seed=7),
        timeout=TIMEOUT).model
    w = array(uniform.layers[0].weights)
    assert (w >= 0).all() and (w < 1).all() and array(uniform.layers[0].biases).any()
    assert first.create_time.seconds > 1_600_000_000
    assert first.update_time == first.create_time


def test_get_model_with_and_without_weights_values_and_raw(stub):
    stub.CreateModel(article_request("m"), timeout=TIMEOUT)
    bare = stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model
    assert bare.id == "m" and not bare.layers and bare.version == 1
    created_raw = stub.CreateModel(pb.CreateModelRequest(
        model_id="r", architecture=pb.Architecture(layer_sizes=[2, 1]),
        layers=[pb.Layer(weights=tensor([[1.0, 2.0]], raw=True), biases=tensor([3.0]))]),
        timeout=TIMEOUT).model
    assert created_raw.layers[0].weights.raw and created_raw.layers[0].biases.raw
    values = stub.GetModel(pb.GetModelRequest(model_id="m", include_weights=True),
                           timeout=TIMEOUT).model
    raw = stub.GetModel(pb.GetModelRequest(model_id="m", include_weights=True, raw=True),
                        timeout=TIMEOUT).model
    assert values.layers[0].weights.values and not values.layers[0].weights.raw
    assert raw.layers[0].weights.raw and not raw.layers[0].weights.values
    assert not raw.layers[0].HasField("biases")  # the article's network has none
    np.testing.assert_array_equal(array(raw.layers[0].weights), ARTICLE_HIDDEN)
    np.testing.assert_array_equal(array(values.layers[1].weights), ARTICLE_OUTPUT)


def test_list_models_pages_in_id_order(stub):
    ids = [f"m{k:02d}" for k in range(7)]
    for model_id in reversed(ids):
        create(stub, model_id)
    seen, token, pages = [], "", 0
    while pages < 10:
        reply = stub.ListModels(pb.ListModelsRequest(page_size=3, page_token=token),
                                timeout=TIMEOUT)
        seen += [m.id for m in reply.models]
        assert all(not m.layers for m in reply.models)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3
    everything = stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT)  # default page 100
    assert [m.id for m in everything.models] == ids and not everything.next_page_token
    huge = stub.ListModels(pb.ListModelsRequest(page_size=5000), timeout=TIMEOUT)  # capped
    assert len(huge.models) == 7 and not huge.next_page_token
    assert code_of(lambda: stub.ListModels(pb.ListModelsRequest(page_token="garbage!"),
                                           timeout=TIMEOUT)) == C.INVALID_ARGUMENT


def test_delete_model(stub):
    create(stub, "gone")
    stub.DeleteModel(pb.DeleteModelRequest(model_id="gone"), timeout=TIMEOUT)
    assert code_of(lambda: stub.GetModel(pb.GetModelRequest(model_id="gone"),
                                         timeout=TIMEOUT)) == C.NOT_FOUND
    assert code_of(lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="gone"),
                                            timeout=TIMEOUT)) == C.NOT_FOUND
    create(stub, "gone")  # the id is free again, and starts over at version 1
    assert stub.GetModel(pb.GetModelRequest(model_id="gone"), timeout=TIMEOUT).model.version == 1


# -- Predict, Step, Train -----------------------------------------------------------------------


def test_predict_values_raw_zero_rows_and_row_counts_going_down(stub):
    create(stub, "p", sizes=(2, 8, 3), output_activation=pb.ACTIVATION_SOFTMAX)
    rng = np.random.default_rng(1)
    x = rng.random((300, 2))
    raw = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x, raw=True)),
                       timeout=TIMEOUT)
    assert raw.outputs.raw and not raw.outputs.values and raw.model_version == 1
    out = array(raw.outputs)
    assert out.shape == (300, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    values = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x[:5])), timeout=TIMEOUT)
    assert values.outputs.values and not values.outputs.raw
    # fewer rows than before (the BLAS and loop paths may differ in the last bit)
    np.testing.assert_allclose(array(values.outputs), out[:5], rtol=1e-12)
    one = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x[:1], raw=True)),
                       timeout=TIMEOUT)
    np.testing.assert_allclose(array(one.outputs), out[:1], rtol=1e-12)
    empty = stub.Predict(pb.PredictRequest(model_id="p", inputs=pb.Tensor(shape=[0, 2])),
                         timeout=TIMEOUT)
    assert list(empty.outputs.shape) == [0, 3]


def test_predict_one_raw_sample_answers_as_every_other_form(stub):
    """One raw sample takes the encoded fast path; its reply is the very message the general
    path builds (values in, two rows in), and what it cannot answer gets the general path's
    errors."""
    create(stub, "one", sizes=(3, 6, 4), output_activation=pb.ACTIVATION_SOFTMAX)
    x = np.random.default_rng(2).random((2, 3))

    def predict(inputs):
        return stub.Predict(pb.PredictRequest(model_id="one", inputs=inputs), timeout=TIMEOUT)

    fast = predict(tensor(x[:1], raw=True))
    assert list(fast.outputs.shape) == [1, 4] and fast.model_version == 1
    assert array(fast.outputs).tobytes() == array(predict(tensor(x[:1])).outputs).tobytes()
    np.testing.assert_allclose(array(fast.outputs), array(predict(tensor(x, raw=True)).outputs)[:1],
                               rtol=1e-12)
    stub.Step(pb.StepRequest(model_id="one", input=[0, 1, 0], target=[1, 0, 0, 0],
                             learning_rate=0.5), timeout=TIMEOUT)
    after = predict(tensor(x[:1], raw=True))
    assert after.model_version == 2 and array(after.outputs).tolist() != array(fast.outputs).tolist()

    def error(inputs, model_id="one"):
        exc = error_of(lambda: stub.Predict(pb.PredictRequest(model_id=model_id, inputs=inputs),
                                            timeout=TIMEOUT))
        return exc.code(), exc.details()

    code, details = error(tensor(np.ones((1, 2)), raw=True))  # the model takes 3 inputs
    assert code == C.INVALID_ARGUMENT and "3" in details
    code, details = error(tensor(np.array([[0.0, np.nan, 1.0]]), raw=True))
    assert code == C.INVALID_ARGUMENT and "finite" in details
    assert error(tensor(x[:1], raw=True), "missing")[0] == C.NOT_FOUND
    both = tensor(x[:1], raw=True)
    both.values.extend([1.0, 2.0, 3.0])
    assert error(both, "missing")[0] == C.INVALID_ARGUMENT  # the request first, as before


def test_step_dry_run_keeps_the_model(stub):
    stub.CreateModel(article_request("s"), timeout=TIMEOUT)
    dry = stub.Step(pb.StepRequest(model_id="s", input=[0, 1], target=[1], learning_rate=0.5,
                                   dry_run=True), timeout=TIMEOUT)
    assert dry.model_version == 1
    model = stub.GetModel(pb.GetModelRequest(model_id="s", include_weights=True),
                          timeout=TIMEOUT).model
    assert model.version == 1 and model.iterations == 0
    np.testing.assert_array_equal(array(model.layers[1].weights), ARTICLE_OUTPUT)
    assert array(dry.layers[1].updated.weights).tolist() != ARTICLE_OUTPUT


def test_train_streams_committed_progress_and_learns_xor(stub):
    create(stub, "xor", seed=3)
    replies = list(stub.Train(pb.TrainRequest(
        model_id="xor", inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=3000, learning_rate=0.5, report_every=500, momentum=0.5), timeout=TIMEOUT))
    assert [r.epoch for r in replies] == [500, 1000, 1500, 2000, 2500, 3000]
    assert [r.model_version for r in replies] == list(range(2, 8))
    assert [r.done for r in replies] == [False] * 5 + [True]
    assert replies[-1].iterations == 12000 and replies[-1].loss < replies[0].loss
    model = stub.GetModel(pb.GetModelRequest(model_id="xor"), timeout=TIMEOUT).model
    assert (model.version, model.epochs_trained, model.iterations) == (7, 3000, 12000)
    assert model.last_loss == replies[-1].loss
    out = array(stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor(XOR_X)),
                             timeout=TIMEOUT).outputs).ravel()
    assert (np.round(out) == np.ravel(XOR_Y)).all()
    # counters keep adding up over calls; report_every 0 still commits at the end
    again = list(stub.Train(pb.TrainRequest(
        model_id="xor", inputs=tensor(XOR_X), targets=tensor(XOR_Y), epochs=10,
        learning_rate=0.5, batch_size=4, shuffle=True, seed=2), timeout=TIMEOUT))
    assert len(again) == 1 and again[0].done and again[0].model_version == 8
    model = stub.GetModel(pb.GetModelRequest(model_id="xor"), timeout=TIMEOUT).model
    assert (model.epochs_trained, model.iterations) == (3010, 12040)


def test_train_target_loss_stops_early(stub):
    create(stub, "early", seed=3)
    replies = list(stub.Train(pb.TrainRequest(
        model_id="early", inputs=tensor(XOR_X), targets=tensor(XOR_Y), epochs=100000,
        learning_rate=0.5, target_loss=0.2), timeout=TIMEOUT))
    assert replies[-1].done and replies[-1].loss <= 0.2 and replies[-1].epoch < 100000


def test_predict_during_train_sees_only_committed_versions(stub):
    create(stub, "live", sizes=(2, 16, 1))
    request = long_train_request("live", epochs=400, report_every=10)
    progress: list[pb.TrainResponse] = []
    trainer = threading.Thread(target=lambda: progress.extend(stub.Train(request, timeout=60)))
    trainer.start()
    x = tensor(np.random.default_rng(2).random((16, 2)), raw=True)
    outputs = defaultdict(set)
    for _ in range(2000):  # bounded
        reply = stub.Predict(pb.PredictRequest(model_id="live", inputs=x), timeout=TIMEOUT)
        outputs[reply.model_version].add(reply.outputs.raw)
        if not trainer.is_alive():
            break
    trainer.join(60)
    assert progress and progress[-1].done
    committed = {1} | {p.model_version for p in progress}
    assert set(outputs) <= committed
    assert len(outputs) > 1, "Predict should have seen training advance"
    assert all(len(seen) == 1 for seen in outputs.values())  # one version, one set of weights
    final = stub.Predict(pb.PredictRequest(model_id="live", inputs=x), timeout=TIMEOUT)
    assert final.model_version == progress[-1].model_version


# -- the error table ----------------------------------------------------------------------------


def _expect(code, call, *words):
    exc = error_of(call)
    assert exc.code() == code, (exc.code(), exc.details())
    for word in words:
        assert word in exc.details(), (word, exc.details())
    return exc.details()


@pytest.mark.parametrize("model_id", ["../etc/passwd", ".hidden", "a" * 129, "a/b", "sp ace",
                                      "é"])
def test_bad_model_ids_are_invalid(stub, model_id):
    _expect(C.INVALID_ARGUMENT, lambda: stub.GetModel(pb.GetModelRequest(model_id=model_id),
                                                      timeout=TIMEOUT), "model id")
    _expect(C.INVALID_ARGUMENT, lambda: stub.CreateModel(pb.CreateModelRequest(
        model_id=model_id, architecture=pb.Architecture(layer_sizes=[1, 1])), timeout=TIMEOUT))
    _expect(C.INVALID_ARGUMENT, lambda: stub.DeleteModel(pb.DeleteModelRequest(
        model_id=model_id), timeout=TIMEOUT))


def test_longest_valid_id_works(stub):
    model_id = "A-z_0." + "x" * 122
    assert create(stub, model_id).id == model_id


def test_invalid_argument_variants(stub):
    create(stub, "m")

    def predict(t):
        return lambda: stub.Predict(pb.PredictRequest(model_id="m", inputs=t), timeout=TIMEOUT)

    _expect(C.INVALID_ARGUMENT, predict(pb.Tensor(shape=[1, 2], raw=b"\0" * 15)), "15 bytes",
            "16")
    both = tensor([[1.0, 2.0]])
    both.raw = np.array([1.0, 2.0]).tobytes()
    _expect(C.INVALID_ARGUMENT, predict(both), "both values and raw")
    _expect(C.INVALID_ARGUMENT, predict(pb.Tensor(shape=[2, 2], values=[1, 2, 3])), "values")
    _expect(C.INVALID_ARGUMENT, predict(pb.Tensor(shape=[0, 2], values=[1.0])), "zero")
    _expect(C.INVALID_ARGUMENT, predict(tensor([[1.0, 2.0, 3.0]])), "3 columns")
    _expect(C.INVALID_ARGUMENT, predict(tensor([[1.0, float("nan")]])), "finite")
    _expect(C.INVALID_ARGUMENT, predict(tensor([[1.0, float("inf")]], raw=True)), "finite")

    def make(**arch):
        return lambda: stub.CreateModel(pb.CreateModelRequest(
            architecture=pb.Architecture(**arch)), timeout=TIMEOUT)

    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 3], hidden_activation=99),
            "hidden_activation", "99")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 3], loss=7), "loss")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 3], gradient_mode=5), "gradient_mode")
    _expect(C.INVALID_ARGUMENT, lambda: stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[2, 3]), init=9), timeout=TIMEOUT), "init")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 3, 1],
                                     hidden_activation=pb.ACTIVATION_SOFTMAX), "output layer")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[]), "layer_sizes")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 0, 1]), "layer_sizes[1]")
    _expect(C.INVALID_ARGUMENT, make(layer_sizes=[2, 1], output_activation=pb.ACTIVATION_LINEAR,
                                     loss=pb.LOSS_CROSS_ENTROPY), "CROSS_ENTROPY")
    _expect(C.INVALID_ARGUMENT, lambda: stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[2, 1]),
        layers=[pb.Layer(weights=tensor([[1.0, 2.0, 3.0]]))]), timeout=TIMEOUT), "layers[0]")
    _expect(C.INVALID_ARGUMENT, lambda: stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[2, 1], bias=True),
        layers=[pb.Layer(weights=tensor([[1.0, 2.0]]))]), timeout=TIMEOUT), "biases")
    _expect(C.INVALID_ARGUMENT, lambda: stub.Step(pb.StepRequest(
        model_id="m", input=[0, 1], target=[1], learning_rate=0), timeout=TIMEOUT),
        "learning_rate")
    _expect(C.INVALID_ARGUMENT, lambda: stub.Step(pb.StepRequest(
        model_id="m", input=[0, 1, 2], target=[1], learning_rate=0.1), timeout=TIMEOUT))
    train = long_train_request("m", epochs=0)
    _expect(C.INVALID_ARGUMENT, lambda: stub.Train(train, timeout=TIMEOUT), "epochs")
    empty = pb.TrainRequest(model_id="m", inputs=pb.Tensor(shape=[0, 2]),
                            targets=pb.Tensor(shape=[0, 1]), epochs=1, learning_rate=0.1)
    _expect(C.INVALID_ARGUMENT, lambda: stub.Train(empty, timeout=TIMEOUT), "rows")
    # none of that changed the model
    assert stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model.version == 1


def test_not_found_and_already_exists(stub):
    missing = pb.GetModelRequest(model_id="nope")
    _expect(C.NOT_FOUND, lambda: stub.GetModel(missing, timeout=TIMEOUT), "nope")
    _expect(C.NOT_FOUND, lambda: stub.Predict(pb.PredictRequest(
        model_id="nope", inputs=tensor([[1.0, 2.0]])), timeout=TIMEOUT))
    _expect(C.NOT_FOUND, lambda: stub.Step(pb.StepRequest(
        model_id="nope", input=[1, 2], target=[1], learning_rate=0.1), timeout=TIMEOUT))
    _expect(C.NOT_FOUND, lambda: stub.Train(long_train_request("nope", epochs=1),
                                            timeout=TIMEOUT))
    create(stub, "taken")
    _expect(C.ALREADY_EXISTS, lambda: create(stub, "taken"), "taken")


def test_divergence_keeps_the_last_committed_finite_model(stub):
    create(stub, "wild", sizes=(1, 1), output_activation=pb.ACTIVATION_LINEAR)
    x, y = [[100.0], [-50.0]], [[1e3], [-2e3]]
    first = list(stub.Train(pb.TrainRequest(model_id="wild", inputs=tensor(x), targets=tensor(y),
                                            epochs=1, learning_rate=1e-6), timeout=TIMEOUT))
    assert first[-1].model_version == 2
    details = _expect(C.FAILED_PRECONDITION, lambda: stub.Train(pb.TrainRequest(
        model_id="wild", inputs=tensor(x), targets=tensor(y), epochs=500, learning_rate=10.0),
        timeout=TIMEOUT), "learning rate")
    assert "loss" in details
    model = stub.GetModel(pb.GetModelRequest(model_id="wild", include_weights=True),
                          timeout=TIMEOUT).model
    assert model.version == 2
    assert np.isfinite(array(model.layers[0].weights)).all()
    # and the lease is free again
    assert list(stub.Train(pb.TrainRequest(model_id="wild", inputs=tensor(x), targets=tensor(y),
                                           epochs=1, learning_rate=1e-6),
                           timeout=TIMEOUT))[-1].model_version == 3


def test_aborted_while_another_call_trains(stub):
    create(stub, "busy")
    call = stub.Train(long_train_request("busy"), timeout=60)
    try:
        first = next(call)
        assert first.model_version >= 2
        for attempt in (
                lambda: stub.Train(long_train_request("busy", epochs=1), timeout=TIMEOUT),
                lambda: stub.Step(pb.StepRequest(model_id="busy", input=[0, 1], target=[1],
                                                 learning_rate=0.1), timeout=TIMEOUT),
                lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="busy"),
                                         timeout=TIMEOUT)):
            _expect(C.ABORTED, attempt, "busy", "being trained")
        # reads keep working on the last committed version
        dry = stub.Step(pb.StepRequest(model_id="busy", input=[0, 1], target=[1],
                                       learning_rate=0.1, dry_run=True), timeout=TIMEOUT)
        assert dry.model_version >= first.model_version
        got = stub.GetModel(pb.GetModelRequest(model_id="busy"), timeout=TIMEOUT).model
        assert got.version >= first.model_version
    finally:
        call.cancel()
    # cancelling stops the work and frees the lease (next chunk, ~0.1 s)
    wait_for(lambda: _step_ok(stub, "busy"), 5, what="lease released after cancel")


def _step_ok(stub, model_id) -> bool:
    try:
        stub.Step(pb.StepRequest(model_id=model_id, input=[0, 1], target=[1],
                                 learning_rate=0.1), timeout=TIMEOUT)
        return True
    except grpc.RpcError as exc:
        assert exc.code() == C.ABORTED, exc
        return False


def test_deadline_stops_train_and_frees_the_lease(stub):
    create(stub, "late")
    code = code_of(lambda: list(stub.Train(long_train_request("late"), timeout=0.5)))
    assert code == C.DEADLINE_EXCEEDED
    wait_for(lambda: _step_ok(stub, "late"), 5, what="lease released after the deadline")
    version = stub.GetModel(pb.GetModelRequest(model_id="late"), timeout=TIMEOUT).model.version
    # the work stopped: no more commits arrive
    threading.Event().wait(0.3)
    assert stub.GetModel(pb.GetModelRequest(model_id="late"),
                         timeout=TIMEOUT).model.version == version


def test_unexpected_error_is_internal_and_logged(server, monkeypatch, caplog):
    create(server.stub, "x")

    def broken(model_id):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(server.handle.store, "get", broken)
    with caplog.at_level("ERROR", logger="jitnet.service.servicer"):
        details = _expect(C.INTERNAL, lambda: server.stub.GetModel(
            pb.GetModelRequest(model_id="x"), timeout=TIMEOUT), "incident")
    assert "secret" not in details and "RuntimeError" not in details
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_disk_full_is_resource_exhausted_and_keeps_the_old_version(server, monkeypatch):
    import errno
    import os
    create(server.stub, "d")
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith(".jitnet"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    _expect(C.RESOURCE_EXHAUSTED, lambda: server.stub.Step(pb.StepRequest(
        model_id="d", input=[0, 1], target=[1], learning_rate=0.1), timeout=TIMEOUT),
        "disk", "full")

    def broken(src, dst, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken)
    _expect(C.INTERNAL, lambda: server.stub.Step(pb.StepRequest(
        model_id="d", input=[0, 1], target=[1], learning_rate=0.1), timeout=TIMEOUT),
        "Input/output error", "previous version is kept")
    monkeypatch.setattr(os, "replace", real_replace)
    assert server.stub.GetModel(pb.GetModelRequest(model_id="d"),
                                timeout=TIMEOUT).model.version == 1
    assert not [n for n in os.listdir(server.data_dir) if n.startswith(".tmp-")]
    assert server.stub.Step(pb.StepRequest(model_id="d", input=[0, 1], target=[1],
                                           learning_rate=0.1), timeout=TIMEOUT).model_version == 2
