"""CheckGradients through the server: the result equals an independent finite difference of the
stored model's weights (read back with GetModel) for every activation and loss; the sign is
Step's; the limit on forward passes; bad requests; deadlines; auth; nothing compiles after
warm-up; the client's call and the reply size bound."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from jitnet.client import AsyncClient, Client
from jitnet.service.config import Config, ConfigError
from jitnet.service.engine.model import Architecture
from jitnet.service.protocols import limits
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    TIMEOUT,
    array,
    article_request,
    create,
    error_of,
    long_train_request,
    tensor,
)
from tests.support.stored import C

from ..support.gradient_grid import GRID, case_id
from .test_engine_check import assert_check_matches, make_problem


def proto_architecture(arch: Architecture) -> pb.Architecture:
    return pb.Architecture(
        layer_sizes=arch.layer_sizes,
        hidden_activation=pb.Activation.Value("ACTIVATION_" + arch.hidden_activation.name),
        output_activation=pb.Activation.Value("ACTIVATION_" + arch.output_activation.name),
        loss=pb.Loss.Value("LOSS_" + arch.loss.name), bias=arch.bias,
        gradient_mode=pb.GradientMode.Value("GRADIENT_MODE_" + arch.gradient_mode.name))


def stored_layers(stub, model_id):
    """The model's weights as the server keeps them, [(W, b or None)]."""
    model = stub.GetModel(pb.GetModelRequest(model_id=model_id, include_weights=True),
                          timeout=TIMEOUT).model
    return [(array(layer.weights), array(layer.biases) if layer.HasField("biases") else None)
            for layer in model.layers]


class AsCheck:
    """A CheckGradientsResponse read as the engine's GradientCheck (for assert_check_matches)."""

    class Layer:
        def __init__(self, proto):
            self.weights = array(proto.analytic.weights)
            self.numeric_weights = array(proto.numeric.weights)
            has_b = proto.analytic.HasField("biases")
            self.biases = array(proto.analytic.biases) if has_b else None
            self.numeric_biases = array(proto.numeric.biases) if has_b else None
            self.max_relative_error = proto.max_relative_error

    def __init__(self, reply):
        self.layers = [self.Layer(layer) for layer in reply.layers]
        self.max_relative_error, self.loss = reply.max_relative_error, reply.loss


def test_every_activation_and_loss_equals_an_independent_finite_difference(stub):
    for index, case in enumerate(GRID):
        hidden, (output, loss), bias, mode = case
        arch, layers, x, t = make_problem(index, hidden, output, loss, bias, mode)
        model_id = case_id(case)
        stub.CreateModel(pb.CreateModelRequest(
            model_id=model_id, architecture=proto_architecture(arch),
            layers=[pb.Layer(weights=tensor(w), biases=tensor(b) if b is not None else None)
                    for w, b in layers]), timeout=TIMEOUT)
        reply = stub.CheckGradients(pb.CheckGradientsRequest(
            model_id=model_id, input=x[0].tolist(), target=t[0].tolist()), timeout=TIMEOUT)
        assert reply.model_version == 1 and reply.epsilon == 1e-4, model_id
        # From the weights the server holds, not the ones sent.
        assert_check_matches(AsCheck(reply), stored_layers(stub, model_id), x, t, arch)
        if mode.name == "EXACT":
            assert reply.max_relative_error < 1e-5, model_id


def test_the_article_check_is_in_steps_sign_and_changes_nothing(stub):
    stub.CreateModel(article_request("article"), timeout=TIMEOUT)
    reply = stub.CheckGradients(pb.CheckGradientsRequest(model_id="article", input=[0, 1],
                                                         target=[1]), timeout=TIMEOUT)
    step = stub.Step(pb.StepRequest(model_id="article", input=[0, 1], target=[1],
                                    learning_rate=0.001, dry_run=True), timeout=TIMEOUT)
    for layer, trace in zip(reply.layers, step.layers, strict=True):
        moved = array(trace.updated.weights) - array(trace.before.weights)
        np.testing.assert_allclose(moved, 0.001 * array(layer.analytic.weights), rtol=1e-9,
                                   atol=1e-15)
        assert not layer.analytic.HasField("biases") and not layer.numeric.HasField("biases")
    assert reply.loss == pytest.approx(step.loss, rel=1e-12)
    # ARTICLE mode: the article's derivative is 20-30% off the true one.
    assert 0.2 < reply.max_relative_error < 0.3
    assert reply.max_relative_error == max(layer.max_relative_error for layer in reply.layers)
    model = stub.GetModel(pb.GetModelRequest(model_id="article"), timeout=TIMEOUT).model
    assert model.version == 1 and model.iterations == 0


def test_the_step_h_is_the_requests(stub):
    create(stub, "m", sizes=(3, 2))
    reply = stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="m", input=[0.1, 0.2, 0.3], target=[0.5, 0.5], epsilon=1e-3), timeout=TIMEOUT)
    assert reply.epsilon == 1e-3
    assert reply.max_relative_error < 1e-4


def test_the_limit_on_forward_passes(make_server):
    server = make_server(limits=dict(max_gradient_check_passes=34))
    stub = server.stub
    create(stub, "at", sizes=(2, 4, 1))  # 17 parameters: 34 passes, the limit
    create(stub, "over", sizes=(2, 4, 1, 1))  # 19 parameters: 38 passes
    ok = stub.CheckGradients(pb.CheckGradientsRequest(model_id="at", input=[0, 1], target=[1]),
                             timeout=TIMEOUT)
    assert len(ok.layers) == 2
    exc = error_of(lambda: stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="over", input=[0, 1], target=[1]), timeout=TIMEOUT))
    assert exc.code() == C.RESOURCE_EXHAUSTED
    for words in ("2 x 19 parameters = 38 forward passes", "max_gradient_check_passes = 34",
                  "--max-gradient-check-passes", "JITNET_MAX_GRADIENT_CHECK_PASSES"):
        assert words in exc.details(), exc.details()


def test_the_setting_is_a_flag_and_a_variable():
    env = Config.from_env({"JITNET_MAX_GRADIENT_CHECK_PASSES": "1e6"})
    assert env.limits.max_gradient_check_passes == 1_000_000
    assert Config().limits.max_gradient_check_passes == 100_000
    with pytest.raises(ConfigError, match="--max-gradient-check-passes"):
        Config.from_env({"JITNET_MAX_GRADIENT_CHECK_PASSES": "1"})


@pytest.mark.parametrize("request_fields,field", [
    (dict(input=[0, 1, 2], target=[1]), "input"),
    (dict(input=[0], target=[1]), "input"),
    (dict(input=[0, 1], target=[1, 0]), "target"),
    (dict(input=[0, 1], target=[]), "target"),
    (dict(input=[0, float("nan")], target=[1]), "input"),
    (dict(input=[0, 1], target=[float("inf")]), "target"),
    (dict(input=[0, 1], target=[1], epsilon=-1e-4), "epsilon"),
    (dict(input=[0, 1], target=[1], epsilon=float("nan")), "epsilon"),
    (dict(input=[0, 1], target=[1], epsilon=1.0), "epsilon"),
])
def test_bad_requests_are_invalid_naming_the_field(stub, request_fields, field):
    create(stub, "m", sizes=(2, 3, 1))
    exc = error_of(lambda: stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="m", **request_fields), timeout=TIMEOUT))
    assert exc.code() == C.INVALID_ARGUMENT and field in exc.details(), exc.details()


def test_unknown_and_malformed_ids(stub):
    exc = error_of(lambda: stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="nope", input=[0, 1], target=[1]), timeout=TIMEOUT))
    assert exc.code() == C.NOT_FOUND
    exc = error_of(lambda: stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="../x", input=[0, 1], target=[1]), timeout=TIMEOUT))
    assert exc.code() == C.INVALID_ARGUMENT


def test_a_deadline_stops_the_work(stub):
    # 200-200-10: 42,210 parameters, 84,420 forward passes of 42,000 multiply-adds each
    # (6 s here), within the default limit.
    model = create(stub, "big", sizes=(200, 200, 10))
    assert model.parameter_count == 42_210
    began = time.monotonic()
    exc = error_of(lambda: stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="big", input=[0.5] * 200, target=[0.1] * 10), timeout=0.3))
    assert exc.code() == C.DEADLINE_EXCEEDED
    # The server stopped between chunks and answers the next call at once.
    small = create(stub, "small", sizes=(2, 1))
    reply = stub.CheckGradients(pb.CheckGradientsRequest(model_id="small", input=[0, 1],
                                                         target=[1]), timeout=TIMEOUT)
    assert reply.max_relative_error < 1e-5 and small.version == 1
    assert time.monotonic() - began < 5


def test_a_model_being_trained_is_checked_at_its_last_committed_version(stub):
    create(stub, "busy", sizes=(2, 3, 1))
    stream = stub.Train(long_train_request("busy", report_every=50), timeout=TIMEOUT)
    try:
        first = next(stream)  # training, and committed at least once
        reply = stub.CheckGradients(pb.CheckGradientsRequest(model_id="busy", input=[0, 1],
                                                             target=[1]), timeout=TIMEOUT)
        assert reply.model_version >= first.model_version
        assert reply.max_relative_error < 1e-5
    finally:
        stream.cancel()


def test_the_token_is_needed(make_server):
    server = make_server(auth_token="s3cret-token-for-the-check")
    exc = error_of(lambda: server.stub.CheckGradients(pb.CheckGradientsRequest(
        model_id="m", input=[0, 1], target=[1]), timeout=TIMEOUT))
    assert exc.code() == C.UNAUTHENTICATED


def test_the_reply_bound_holds(stub):
    for sizes, bias in (((2, 4, 1), True), ((5, 1), False), ((3, 7, 7, 2), True),
                        ((64, 64, 10), True)):
        model_id = f"b{len(sizes)}{bias}{sizes[0]}"
        create(stub, model_id, sizes=sizes, bias=bias)
        reply = stub.CheckGradients(pb.CheckGradientsRequest(
            model_id=model_id, input=[0.5] * sizes[0], target=[0.5] * sizes[-1]),
            timeout=TIMEOUT)
        arch = Architecture(sizes, bias=bias)
        assert reply.ByteSize() <= limits.gradient_check_reply_bound(arch), sizes


def test_the_clients_call(server):
    address = f"127.0.0.1:{server.port}"
    with Client(address) as client:
        client.create_model([2, 3, 1], hidden="tanh", model_id="c", seed=3)
        check = client.check_gradients("c", [0.2, 0.8], [1], epsilon=1e-3)
        layers = client.get_model("c", include_weights=True).layers
    assert check.model_id == "c" and check.version == 1 and check.epsilon == 1e-3
    assert [layer.weights.shape for layer in check.layers] == [(3, 2), (1, 3)]
    assert check.layers[0].numeric_biases.shape == (3,)
    arch = Architecture((2, 3, 1), hidden_activation=2)
    x, t = np.array([[0.2, 0.8]]), np.array([[1.0]])
    assert_check_matches(check, [(w.copy(), b.copy()) for w, b in layers], x, t, arch, 1e-3)

    async def run():
        async with AsyncClient(address) as aclient:
            return await aclient.check_gradients("c", [0.2, 0.8], [1], epsilon=1e-3)

    again = asyncio.run(run())
    assert again.max_relative_error == check.max_relative_error
    np.testing.assert_array_equal(again.layers[1].weights, check.layers[1].weights)


def test_nothing_compiles_after_warm_up(make_server):
    from numba.core.registry import CPUDispatcher

    from jitnet.service.engine import kernels

    def specialisations():
        return {name: len(obj.signatures) for name, obj in vars(kernels).items()
                if isinstance(obj, CPUDispatcher)}

    stub = make_server().stub
    before = specialisations()
    assert before["finite_differences"] >= 1, "warm-up did not compile the check"
    create(stub, "small", sizes=(2, 3, 1))
    create(stub, "wide", sizes=(64, 64, 10), bias=False)
    for model_id, n_in, n_out in (("small", 2, 1), ("wide", 64, 10)):
        stub.CheckGradients(pb.CheckGradientsRequest(model_id=model_id, input=[0.3] * n_in,
                                                     target=[0.5] * n_out), timeout=TIMEOUT)
    assert specialisations() == before


def test_request_bytes_that_do_not_parse_are_invalid_argument(server):
    call = server.channel.unary_unary("/jitnet.v1.NetworkService/CheckGradients")
    for data in (b"\xff\xff\xff", b"\x00", b"\x0a\x05ab"):
        exc = error_of(lambda data=data: call(data, timeout=TIMEOUT))
        assert exc.code() == C.INVALID_ARGUMENT
        assert "the CheckGradients request does not parse" in exc.details()
