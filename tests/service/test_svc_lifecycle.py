"""In-process server life: health, reflection, drain, limits, TLS, tokens, unreadable models."""

from __future__ import annotations

import os
import threading

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jitnet.service.file_store import FileStore as Store
from jitnet.service.model import Architecture, Init, initial_parameters
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from tests.support.rpc import (
    NOT_SERVING,
    SERVING,
    TIMEOUT,
    XOR_X,
    code_of,
    create,
    error_of,
    health_status,
    long_train_request,
    tensor,
    wait_for,
)
from tests.support.tls import self_signed_certificate

C = grpc.StatusCode
SERVICE = "jitnet.v1.NetworkService"


# -- health and reflection ----------------------------------------------------------------------


def test_health_not_serving_until_warm_up_and_load_finish_then_not_serving_on_drain(make_server):
    release = threading.Event()
    server = make_server(warm_up=lambda: release.wait(20), wait_ready=False)
    for name in ("", SERVICE):
        assert health_status(server.channel, name) == NOT_SERVING
    # calls before SERVING are refused, not answered from an empty store
    assert code_of(lambda: server.stub.ListModels(pb.ListModelsRequest(),
                                                  timeout=TIMEOUT)) == C.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(server.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=20)
    assert next(watch).status == NOT_SERVING
    release.set()
    assert next(watch).status == SERVING
    assert health_status(server.channel, "") == SERVING
    assert code_of(lambda: health_status(server.channel, "no.such.Service")) == C.NOT_FOUND
    server.handle.drain(5)
    assert next(watch).status == NOT_SERVING
    watch.cancel()


def test_failed_start_up_is_reported(make_server):
    def broken():
        raise RuntimeError("compiler exploded")

    server = make_server(warm_up=broken, wait_ready=False)
    wait_for(lambda: server.handle.startup_error is not None, 10, what="startup error")
    assert health_status(server.channel) == NOT_SERVING


def test_reflection_lists_the_services(server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(server.channel)
    assert set(db.get_services()) == {SERVICE, "grpc.health.v1.Health",
                                      "grpc.reflection.v1alpha.ServerReflection"}
    methods = {m.name for m in DescriptorPool(db).FindServiceByName(SERVICE).methods}
    assert methods == {"CreateModel", "GetModel", "ListModels", "DeleteModel", "Train", "Step",
                       "Predict"}


def test_draining_refuses_new_calls_and_lets_calls_in_flight_finish(server):
    create(server.stub, "d")
    watch = health_pb2_grpc.HealthStub(server.channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=20)
    assert next(watch).status == SERVING
    stream = server.stub.Train(long_train_request("d", epochs=300, report_every=10), timeout=30)
    first = next(stream)
    stopped = server.handle.drain(10)
    assert next(watch).status == NOT_SERVING  # a new Check is refused like any new call
    fresh = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        code = code_of(lambda: pb_grpc.NetworkServiceStub(fresh).ListModels(
            pb.ListModelsRequest(), timeout=5))
    finally:
        fresh.close()
    assert code == C.UNAVAILABLE
    watch.cancel()  # the drain ends Watch streams by itself; cancel ours so nothing waits on it
    rest = list(stream)  # the call in flight finishes normally
    assert rest[-1].done and rest[-1].epoch == 300 and rest[-1].model_version > first.model_version
    assert stopped.wait(10)


def test_a_call_outliving_the_grace_is_cut_and_its_work_stops(server):
    create(server.stub, "cut")
    stream = server.stub.Train(long_train_request("cut"), timeout=30)
    next(stream)
    stopped = server.handle.drain(0.3)
    assert code_of(lambda: list(stream)) in (C.CANCELLED, C.UNAVAILABLE, C.ABORTED)
    assert stopped.wait(10)
    # the training loop saw the cut: the lease is free (a store call succeeds at once)
    wait_for(lambda: _lease_free(server.handle.store, "cut"), 5, what="lease freed")


def _lease_free(store, model_id) -> bool:
    from jitnet.service.errors import Busy
    try:
        store.lease(model_id).release()
        return True
    except Busy:
        return False


# -- limits -------------------------------------------------------------------------------------


def _limit_error(call, flag: str, value: str):
    exc = error_of(call)
    assert exc.code() == C.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
    env = "JITNET_" + flag[2:].replace("-", "_").upper()
    for word in (flag, env, value):
        assert word in exc.details(), (word, exc.details())


def test_each_configured_limit(make_server):
    server = make_server(limits=dict(max_parameters=100, max_layer_width=50, max_layers=3,
                                     max_rows=10, max_work=1000))
    stub = server.stub

    def make(sizes, bias=True):
        return lambda: stub.CreateModel(pb.CreateModelRequest(
            architecture=pb.Architecture(layer_sizes=sizes, bias=bias)), timeout=TIMEOUT)

    _limit_error(make([10, 10]), "--max-parameters", "100")  # 110 parameters
    assert make([10, 9], bias=False)().model.parameter_count == 90
    _limit_error(make([51, 1]), "--max-layer-width", "50")
    _limit_error(make([1, 1, 1, 1, 1]), "--max-layers", "3")
    create(stub, "m")
    _limit_error(lambda: stub.Predict(pb.PredictRequest(
        model_id="m", inputs=tensor(np.zeros((11, 2)), raw=True)), timeout=TIMEOUT),
        "--max-rows", "10")
    assert stub.Predict(pb.PredictRequest(model_id="m", inputs=tensor(np.zeros((10, 2)))),
                        timeout=TIMEOUT).model_version == 1
    _limit_error(lambda: stub.Train(long_train_request("m", rows=11, epochs=1), timeout=TIMEOUT),
                 "--max-rows", "10")
    _limit_error(lambda: stub.Train(long_train_request("m", rows=10, epochs=101),
                                    timeout=TIMEOUT), "--max-work", "1000")
    assert list(stub.Train(long_train_request("m", rows=10, epochs=100), timeout=TIMEOUT))[-1].done


def test_message_size_limit(make_server):
    server = make_server(limits=dict(max_message_bytes=4096))
    create(server.stub, "m")
    big = tensor(np.zeros((400, 2)), raw=True)  # 6400 bytes of data
    assert code_of(lambda: server.stub.Predict(pb.PredictRequest(model_id="m", inputs=big),
                                               timeout=TIMEOUT)) == C.RESOURCE_EXHAUSTED
    small = tensor(np.zeros((100, 2)), raw=True)
    assert server.stub.Predict(pb.PredictRequest(model_id="m", inputs=small),
                               timeout=TIMEOUT).model_version == 1
    # a model whose weights do not fit in a reply is created, without weights in the reply
    big = server.stub.CreateModel(pb.CreateModelRequest(
        model_id="big", architecture=pb.Architecture(layer_sizes=[30, 30])), timeout=TIMEOUT)
    assert big.model.parameter_count == 930 and not big.model.layers
    # and a reply over the limit is refused, naming the setting
    _limit_error(lambda: server.stub.GetModel(pb.GetModelRequest(
        model_id="big", include_weights=True, raw=True), timeout=TIMEOUT),
        "--max-message-bytes", "4096")
    assert server.stub.GetModel(pb.GetModelRequest(model_id="big"), timeout=TIMEOUT).model.id
    server.stub.CreateModel(pb.CreateModelRequest(
        model_id="wide", architecture=pb.Architecture(layer_sizes=[1, 200])), timeout=TIMEOUT)
    _limit_error(lambda: server.stub.Predict(pb.PredictRequest(
        model_id="wide", inputs=tensor(np.zeros((10, 1)))), timeout=TIMEOUT),
        "--max-message-bytes", "4096")
    assert health_status(server.channel) == SERVING


def test_concurrent_calls_limit(make_server):
    server = make_server(limits=dict(max_concurrent_calls=2), threads=4)
    for name in ("a", "b"):
        create(server.stub, name)
    streams = [server.stub.Train(long_train_request(name), timeout=30) for name in ("a", "b")]
    try:
        for stream in streams:
            next(stream)
        assert code_of(lambda: server.stub.ListModels(pb.ListModelsRequest(),
                                                      timeout=TIMEOUT)) == C.RESOURCE_EXHAUSTED
    finally:
        for stream in streams:
            stream.cancel()
    wait_for(lambda: _list_ok(server.stub), 5, what="a free call slot")


def _list_ok(stub) -> bool:
    try:
        stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT)
        return True
    except grpc.RpcError as exc:
        assert exc.code() == C.RESOURCE_EXHAUSTED
        return False


# -- TLS and the bearer token -------------------------------------------------------------------


def test_tls(make_server, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server = make_server(tls_cert=str(cert), tls_key=str(key))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = pb_grpc.NetworkServiceStub(channel)
        assert create(stub, "secure").version == 1
        assert health_status(channel) == SERVING
    # plaintext against a TLS port fails
    assert code_of(lambda: server.stub.ListModels(pb.ListModelsRequest(), timeout=2)) in (
        C.UNAVAILABLE, C.DEADLINE_EXCEEDED)


def test_bearer_token(make_server):
    server = make_server(auth_token="s3cret")
    stub = server.stub
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
        exc = error_of(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT,
                                               metadata=metadata))
        assert exc.code() == C.UNAUTHENTICATED and "Bearer" in exc.details()
    assert code_of(lambda: stub.Train(long_train_request("x", epochs=1),
                                      timeout=TIMEOUT)) == C.UNAUTHENTICATED
    good = (("authorization", "Bearer s3cret"),)
    stub.CreateModel(pb.CreateModelRequest(model_id="t", architecture=pb.Architecture(
        layer_sizes=[2, 1])), timeout=TIMEOUT, metadata=good)
    replies = list(stub.Train(long_train_request("t", epochs=2), timeout=TIMEOUT, metadata=good))
    assert replies[-1].done
    # health and reflection answer without the token
    assert health_status(server.channel) == SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    assert SERVICE in ProtoReflectionDescriptorDatabase(server.channel).get_services()


# -- unreadable model files ---------------------------------------------------------------------


def _stored(data_dir, *ids):
    store = Store(data_dir)
    store.open()
    arch = Architecture((2, 3, 1))
    for model_id in ids:
        store.create(model_id, arch, initial_parameters(arch, Init.XAVIER, 1))
    return store


def test_corrupt_model_file_leaves_the_others_serving(make_server, tmp_path):
    data = tmp_path / "data"
    _stored(data, "good", "bad", "old", "short")
    raw = bytearray((data / "bad.jitnet").read_bytes())
    raw[60] ^= 0xFF  # a flipped byte: the checksum no longer matches
    (data / "bad.jitnet").write_bytes(bytes(raw))
    raw = bytearray((data / "old.jitnet").read_bytes())
    raw[8] = 99  # format version 99
    (data / "old.jitnet").write_bytes(bytes(raw))
    with open(data / "short.jitnet", "r+b") as f:
        f.truncate(40)
    (data / ".tmp-good-1-abcd").write_bytes(b"half a write")  # left by a crash
    server = make_server(data_dir=str(data))
    stub = server.stub
    assert stub.Predict(pb.PredictRequest(model_id="good", inputs=tensor(XOR_X)),
                        timeout=TIMEOUT).model_version == 1
    assert not (data / ".tmp-good-1-abcd").exists()
    reasons = {"bad": "checksum", "old": "format version 99", "short": "truncated"}
    for model_id, reason in reasons.items():
        calls = [
            lambda: stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=TIMEOUT),
            lambda: stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(XOR_X)),
                                 timeout=TIMEOUT),
            lambda: stub.Step(pb.StepRequest(model_id=model_id, input=[0, 1], target=[1],
                                             learning_rate=0.1), timeout=TIMEOUT),
            lambda: stub.Train(long_train_request(model_id, epochs=1), timeout=TIMEOUT),
        ]
        for call in calls:
            exc = error_of(call)
            assert exc.code() == C.FAILED_PRECONDITION, exc
            assert f"'{model_id}'" in exc.details() and "unreadable" in exc.details()
            assert reason in exc.details(), exc.details()
    listed = [m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models]
    assert listed == ["good"]
    stub.DeleteModel(pb.DeleteModelRequest(model_id="bad"), timeout=TIMEOUT)
    assert code_of(lambda: stub.GetModel(pb.GetModelRequest(model_id="bad"),
                                         timeout=TIMEOUT)) == C.NOT_FOUND
    assert not os.path.exists(data / "bad.jitnet")
    assert health_status(server.channel) == SERVING


def test_unknown_methods_answer_unimplemented_and_are_not_remembered(server):
    """The guard keeps its wrapped handlers by method name: only for methods that exist, or
    any name a client makes up would stay in memory."""
    from concurrent import futures

    from jitnet.service.guard import CallGuard, _GuardedGeneric

    for k in range(3):
        call = server.channel.unary_unary(f"/jitnet.v1.NetworkService/Nope{k}")
        assert code_of(lambda: call(b"", timeout=TIMEOUT)) == grpc.StatusCode.UNIMPLEMENTED

    class Details:
        def __init__(self, method):
            self.method, self.invocation_metadata = method, ()

    known = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    inner = grpc.method_handlers_generic_handler("s.S", {"Known": known})
    generic = _GuardedGeneric(inner, CallGuard(futures.ThreadPoolExecutor(max_workers=1)))
    for k in range(100):
        assert generic.service(Details(f"/s.S/Made-up-{k}")) is None
    wrapped = generic.service(Details("/s.S/Known"))
    assert wrapped is not None and generic.service(Details("/s.S/Known")) is wrapped
    assert list(generic._wrapped) == ["/s.S/Known"]
