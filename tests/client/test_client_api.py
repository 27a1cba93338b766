"""jitnet.client.Client against a server on 127.0.0.1 port 0: every method, typed errors,
deadlines, both tensor forms, progress and cancellation."""

from __future__ import annotations

import asyncio
import datetime
import time

import grpc
import numpy as np
import pytest

from jitnet import client as jc
from jitnet.client import Client, errors
from tests.support.rpc import ARTICLE_HIDDEN, ARTICLE_OUTPUT, XOR, C, unless
from tests.support.servers import free_port
from tests.support.waiting import wait_for

XOR_X, XOR_Y = XOR.inputs, XOR.targets


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Remembers (method, timeout) of every call the client makes."""

    def __init__(self):
        self.calls: list[tuple[str, float | None]] = []

    def intercept_unary_unary(self, continuation, details, request):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request)

    def intercept_unary_stream(self, continuation, details, request):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request)


# --- models ------------------------------------------------------------------------------

def test_create_model_returns_a_model_with_numpy_layers(client, model_id):
    m = client.create_model([2, 3, 1], hidden="TANH", output="ACTIVATION_SIGMOID",
                            init="he", seed=7, model_id=model_id)
    assert m.id == model_id
    assert m.layer_sizes == (2, 3, 1)
    assert (m.hidden_activation, m.output_activation) == ("tanh", "sigmoid")
    assert m.activations == ("tanh", "sigmoid")
    assert (m.loss, m.bias, m.gradient_mode) == ("mse", True, "exact")
    assert m.version == 1 and m.epochs_trained == 0 and m.iterations == 0
    assert m.parameter_count == 2 * 3 + 3 + 3 * 1 + 1
    assert isinstance(m.create_time, datetime.datetime) and m.create_time.tzinfo is not None
    (w1, b1), (w2, b2) = m.layers
    assert w1.shape == (3, 2) and b1.shape == (3,) and w2.shape == (1, 3) and b2.shape == (1,)
    assert w1.dtype == np.float64 and w1.flags.writeable
    # The same seed gives the same weights.
    again = client.create_model([2, 3, 1], hidden="tanh", init="he", seed=7,
                                model_id=model_id + "-again")
    np.testing.assert_array_equal(again.layers[0][0], w1)


def test_create_model_with_explicit_layers_and_server_made_id(client):
    m = client.create_model([2, 4, 1], bias=False, gradient_mode="article",
                            layers=[ARTICLE_HIDDEN, (np.array(ARTICLE_OUTPUT), None)])
    assert m.id  # the server made one
    np.testing.assert_array_equal(m.layers[0][0], ARTICLE_HIDDEN)
    assert m.layers[0][1] is None and not m.bias
    assert m.describe() == "2-4-1 sigmoid/sigmoid mse, no bias, article gradients"
    client.delete_model(m.id)


def test_get_list_delete(client, model_id):
    client.create_model([2, 2, 1], model_id=model_id)
    m = client.get_model(model_id)
    assert m.id == model_id and m.layers is None
    with_weights = client.get_model(model_id, include_weights=True)
    assert [w.shape for w, _ in with_weights.layers] == [(2, 2), (1, 2)]
    assert model_id in {x.id for x in client.list_models()}
    client.delete_model(model_id)
    with pytest.raises(errors.NotFound):
        client.get_model(model_id)


def test_list_models_follows_every_page(client, model_id):
    ids = [f"{model_id}-{i}" for i in range(5)]
    for i in ids:
        client.create_model([1, 1], model_id=i)
    listed = [m.id for m in client.list_models(page_size=2)]
    assert set(ids) <= set(listed)
    assert len(listed) == len(set(listed))
    for i in ids:
        client.delete_model(i)


# --- predict, step, train ---------------------------------------------------------------

def test_predict_matches_the_weights(client, model_id):
    m = client.create_model([3, 4, 2], hidden="tanh", output="linear", model_id=model_id)
    x = np.random.default_rng(0).normal(size=(5, 3))
    (w1, b1), (w2, b2) = m.layers
    expected = np.tanh(x @ w1.T + b1) @ w2.T + b2
    out, version = client.predict(model_id, x, with_version=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert out.shape == (5, 2) and version == 1
    single = client.predict(model_id, x[0])  # 1-D in, 1-D out
    np.testing.assert_allclose(single, expected[0], rtol=1e-12, atol=1e-12)
    assert client.predict(model_id, np.zeros((0, 3))).shape == (0, 2)


def test_raw_and_values_forms_give_identical_numbers(address, model_id):
    x = np.random.default_rng(1).normal(size=(7, 2))
    with Client(address, raw=True) as raw, Client(address, raw=False) as values:
        m = raw.create_model([2, 5, 3], output="softmax", loss="cross-entropy",
                             model_id=model_id)
        created = values.create_model([2, 5, 3], output="softmax", loss="cross_entropy",
                                      layers=m.layers, model_id=model_id + "-v")
        for (w_a, b_a), (w_b, b_b) in zip(m.layers, created.layers, strict=True):
            np.testing.assert_array_equal(w_a, w_b)
            np.testing.assert_array_equal(b_a, b_b)
        np.testing.assert_array_equal(raw.predict(model_id, x), values.predict(model_id, x))
        np.testing.assert_array_equal(raw.predict(model_id, x),
                                      values.predict(model_id + "-v", x))
        for (w_a, _), (w_b, _) in zip(raw.get_model(model_id, True).layers,
                                      values.get_model(model_id, True).layers, strict=True):
            np.testing.assert_array_equal(w_a, w_b)


def test_tensor_helpers_round_trip():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    for raw in (True, False):
        t = jc.to_tensor(a, raw=raw)
        assert bool(t.raw) == raw and bool(t.values) != raw
        np.testing.assert_array_equal(jc.from_tensor(t), a)
    empty = jc.to_tensor(np.zeros((0, 3)))
    assert not empty.raw and not empty.values and list(empty.shape) == [0, 3]
    assert jc.from_tensor(empty).shape == (0, 3)


def test_step_on_the_article_network(client, article):
    trace = client.step(article.id, [0, 1], [1], 0.001, dry_run=True)
    hidden, output = trace.layers
    np.testing.assert_allclose(hidden.net, [0.6, 0.7, 0.9, 0.3])
    np.testing.assert_allclose(hidden.output, [0.645656, 0.668188, 0.710950, 0.574443], atol=1e-6)
    np.testing.assert_allclose(output.output, [0.785530], atol=1e-6)
    np.testing.assert_allclose(output.error, [0.214470], atol=1e-6)
    np.testing.assert_allclose(output.weights, [[0.60003, 0.70003, 0.30003, 0.40003]], atol=1e-5)
    np.testing.assert_array_equal(output.weights_before, ARTICLE_OUTPUT)
    np.testing.assert_array_equal(hidden.weights_before, ARTICLE_HIDDEN)
    assert hidden.biases is None and hidden.biases_before is None
    assert trace.dry_run and trace.version == 1 and trace.loss > 0
    # A dry run keeps the stored weights; a real step commits a new version.
    assert client.get_model(article.id).version == 1
    real = client.step(article.id, [0, 1], [1], 0.001)
    assert real.version == 2
    np.testing.assert_allclose(client.get_model(article.id, True).layers[1][0], output.weights)


def test_train_yields_progress_and_learns_xor(client, model_id):
    client.create_model([2, 4, 1], init="uniform", seed=0, model_id=model_id)
    progress = list(client.train(model_id, XOR_X, XOR_Y[:, 0], epochs=5000, learning_rate=0.5,
                                 target_loss=0.001, report_every=500))
    assert progress and progress[-1].done and not any(p.done for p in progress[:-1])
    assert all(isinstance(p, jc.Progress) for p in progress)
    assert [p.epoch for p in progress] == sorted(p.epoch for p in progress)
    last = progress[-1]
    assert last.loss <= 0.001 and last.epoch < 5000 and last.epochs == 5000
    assert last.iterations == 4 * last.epoch
    versions = [p.version for p in progress]
    assert versions == sorted(set(versions))
    assert client.get_model(model_id).version == last.version
    out = client.predict(model_id, XOR_X)
    assert ((out > 0.5) == (XOR_Y > 0.5)).all()


def _long_training(client, model_id):
    client.create_model([2, 8, 1], model_id=model_id)
    x = np.random.default_rng(0).random((200, 2))
    return client.train(model_id, x, x[:, :1], epochs=1_000_000, learning_rate=0.01,
                        report_every=1)


def _when_free(client, model_id):
    """A real Step on the model once no Train holds it (ABORTED until then)."""
    return wait_for(lambda: unless(lambda: client.step(model_id, [0, 0], [0], 0.1), C.ABORTED),
                    10, 0.05, f"{model_id} free")


def test_closing_the_progress_generator_cancels_training(client, model_id):
    progress = _long_training(client, model_id)
    first = next(progress)
    assert not first.done and first.version >= 2
    # While it trains, the model is busy for a second Train or a real Step ...
    with pytest.raises(errors.Aborted) as info:
        client.step(model_id, [0, 0], [0], 0.1)
    assert info.value.code is grpc.StatusCode.ABORTED
    # ... but Predict and GetModel use the last committed version.
    client.predict(model_id, [0.5, 0.5])
    progress.close()  # cancels the call
    # The server stops between chunks and releases the model.
    trace = _when_free(client, model_id)
    m = client.get_model(model_id)
    assert m.version == trace.version and m.epochs_trained < 1_000_000


def test_train_deadline_and_interrupted_iteration(client, model_id):
    progress = _long_training(client, model_id)
    for _p in progress:  # leaving the loop by break, then dropping the generator, cancels too
        break
    progress.close()
    _when_free(client, model_id)
    with pytest.raises(errors.DeadlineExceeded):
        for _ in client.train(model_id, np.random.default_rng(0).random((200, 2)),
                              np.zeros((200, 1)), epochs=1_000_000, learning_rate=0.01,
                              timeout=0.5):
            pass


def test_health(client):
    assert client.health() == "SERVING"
    with pytest.raises(errors.NotFound):
        client.health("no.such.Service")


# --- deadlines ----------------------------------------------------------------------------

def test_every_unary_call_has_a_deadline(address, model_id):
    recorder = Recorder()
    with Client(address, timeout=12.5, interceptors=[recorder]) as c:
        c.health()
        c.create_model([2, 2, 1], model_id=model_id)
        c.get_model(model_id, include_weights=True)
        c.list_models()
        c.predict(model_id, [[0, 1]])
        c.step(model_id, [0, 1], [1], 0.1, dry_run=True)
        list(c.train(model_id, XOR_X, XOR_Y, epochs=2, learning_rate=0.1))
        list(c.train(model_id, XOR_X, XOR_Y, epochs=2, learning_rate=0.1, timeout=30))
        c.predict(model_id, [[0, 1]], timeout=3.0)
        c.delete_model(model_id)
    methods = {m.rsplit("/", 1)[-1] for m, _ in recorder.calls}
    assert methods == {"Check", "CreateModel", "GetModel", "ListModels", "Predict", "Step",
                       "Train", "DeleteModel"}
    unary = [(m, t) for m, t in recorder.calls if not m.endswith("/Train")]
    assert all(t is not None for _, t in unary), unary
    assert {t for _, t in unary} == {12.5, 3.0}
    # Train is a stream: no deadline unless asked for (closing it cancels instead).
    assert [t for m, t in recorder.calls if m.endswith("/Train")] == [None, 30]


def test_a_client_needs_a_deadline():
    with pytest.raises(errors.InvalidArgument):
        Client("127.0.0.1:1", timeout=None)
    with pytest.raises(errors.InvalidArgument):
        Client("127.0.0.1:1", timeout=0)


# --- typed errors -------------------------------------------------------------------------

def test_error_types_carry_code_and_details(client, model_id):
    with pytest.raises(errors.NotFound) as info:
        client.get_model(model_id)
    e = info.value
    assert isinstance(e, errors.JitnetError)
    assert e.code is grpc.StatusCode.NOT_FOUND and model_id in e.details
    assert str(e).startswith("NOT_FOUND: ") and e.__suppress_context__  # raised `from None`

    client.create_model([2, 1], model_id=model_id)
    with pytest.raises(errors.AlreadyExists) as info:
        client.create_model([2, 1], model_id=model_id)
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS

    for bad in (lambda: client.predict(model_id, [[1, 2, 3]]),  # 3 columns, 2 expected
                lambda: client.predict(model_id, [[np.nan, 0]]),
                lambda: client.create_model([2]),
                lambda: client.create_model([2, 2, 1], hidden="softmax"),
                lambda: client.create_model([2, 1], model_id="bad id!"),
                lambda: client.step(model_id, [0, 1], [1], 0.0)):
        with pytest.raises(errors.InvalidArgument) as info:
            bad()
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT and info.value.details


def test_local_argument_errors_are_invalid_argument(client):
    with pytest.raises(errors.InvalidArgument, match="not one of"):
        client.create_model([2, 1], hidden="sigmoidal")
    with pytest.raises(errors.InvalidArgument, match="numbers"):
        client.predict("x", [["a", "b"]])
    with pytest.raises(ValueError):  # InvalidArgument is also a ValueError
        client.predict("x", np.zeros((2, 2, 2)))


def test_divergence_is_failed_precondition(client, model_id):
    client.create_model([1, 4, 1], hidden="linear", output="linear", init="uniform",
                        model_id=model_id)
    x = np.linspace(0, 100, 50).reshape(-1, 1)
    with pytest.raises(errors.FailedPrecondition) as info:
        list(client.train(model_id, x, x, epochs=1000, learning_rate=10.0))
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    for w, _ in client.get_model(model_id, include_weights=True).layers:
        assert np.isfinite(w).all()  # the last good weights are kept


def test_deadline_exceeded_and_unavailable(make_server, monkeypatch):
    server = make_server()
    page = server.handle.store.page

    def slow_page(after, limit):  # ListModels takes a second to answer
        time.sleep(1.0)
        return page(after, limit)

    monkeypatch.setattr(server.handle.store, "page", slow_page)
    with Client(server.address, timeout=0.2) as c:
        with pytest.raises(errors.DeadlineExceeded) as info:
            c.list_models()
        assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(errors.InvalidArgument):
            c.list_models(timeout=0)
    with Client(f"127.0.0.1:{free_port()}", timeout=5) as nowhere:  # nobody listens there
        with pytest.raises(errors.Unavailable) as info:
            nowhere.health()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE


def test_resource_exhausted(client):
    with pytest.raises(errors.ResourceExhausted):
        client.create_model([5000, 5000, 1])  # 25M parameters, over the default 10M


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_every_status_code_maps_to_a_typed_error(code):
    e = errors.error_for(code, "details")
    assert e.code is code and e.details == "details" and isinstance(e, errors.JitnetError)
    expected = {
        "INVALID_ARGUMENT": errors.InvalidArgument, "NOT_FOUND": errors.NotFound,
        "ALREADY_EXISTS": errors.AlreadyExists, "ABORTED": errors.Aborted,
        "FAILED_PRECONDITION": errors.FailedPrecondition,
        "RESOURCE_EXHAUSTED": errors.ResourceExhausted, "UNAVAILABLE": errors.Unavailable,
        "DEADLINE_EXCEEDED": errors.DeadlineExceeded, "CANCELLED": errors.Cancelled,
        "UNAUTHENTICATED": errors.Unauthenticated, "PERMISSION_DENIED": errors.PermissionDenied,
        "INTERNAL": errors.Internal,
    }.get(code.name, errors.JitnetError)
    assert type(e) is expected


# --- asyncio ------------------------------------------------------------------------------

def test_async_client(address, model_id):
    async def scenario():
        async with jc.AsyncClient(address) as c:
            assert await c.health() == "SERVING"
            m = await c.create_model([2, 4, 1], init="uniform", model_id=model_id)
            assert (await c.get_model(m.id)).id == m.id
            assert m.id in {x.id for x in await c.list_models()}
            seen = [p async for p in c.train(m.id, XOR_X, XOR_Y, epochs=5000,
                                             learning_rate=0.5, target_loss=0.001)]
            assert seen[-1].done
            out = await c.predict(m.id, XOR_X)
            assert ((out > 0.5) == (XOR_Y > 0.5)).all()
            trace = await c.step(m.id, [0, 1], [1], 0.1, dry_run=True)
            assert len(trace.layers) == 2
            with pytest.raises(errors.NotFound):
                await c.get_model(model_id + "-missing")
            # aclose() on the progress stream cancels the call and frees the model.
            x = np.random.default_rng(0).random((200, 2))
            stream = c.train(m.id, x, x[:, :1], epochs=1_000_000, learning_rate=0.01,
                             report_every=1)
            assert not (await stream.__anext__()).done
            await stream.aclose()
            for _ in range(200):
                try:
                    await c.step(m.id, [0, 0], [0], 0.1)
                    break
                except errors.Aborted:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the model stayed busy after aclose()")
            await c.delete_model(m.id)

    asyncio.run(scenario())
