"""Start-up and health: NOT_SERVING (and every call refused) until warm-up and loading finish,
a failed start-up reported, reflection listing the services, health answered on threads of
its own while every worker is busy."""

from __future__ import annotations

import threading
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    DATASET_RPCS,
    NOT_SERVING,
    RPCS,
    SERVICE,
    SERVING,
    TIMEOUT,
    C,
    code_of,
    create,
    health_status,
    long_train_request,
)
from tests.support.stored import timed
from tests.support.waiting import wait_for


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
    assert set(db.get_services()) == {SERVICE, "inference.GRPCInferenceService",
                                      "grpc.health.v1.Health",
                                      "grpc.reflection.v1alpha.ServerReflection"}
    methods = {m.name for m in DescriptorPool(db).FindServiceByName(SERVICE).methods}
    assert methods == set(RPCS + DATASET_RPCS)


def test_health_answers_at_once_while_every_worker_is_busy(make_server):
    """Probes run on threads of their own: with every worker training, Check still answers."""
    server = make_server(threads=2)
    stub = server.stub
    streams = []
    try:
        for k in range(2):
            create(stub, f"h{k}")
            streams.append(stub.Train(long_train_request(f"h{k}"), timeout=60))
            next(streams[-1])
        latencies = []
        for _ in range(5):
            result, seconds = timed(lambda: health_status(server.channel))
            assert result == SERVING
            latencies.append(seconds)
        assert max(latencies) < 0.5, latencies
        # a NetworkService call, by contrast, waits for a worker (it is queued, not refused)
        waiting = stub.ListModels.future(pb.ListModelsRequest(), timeout=TIMEOUT)
        time.sleep(0.2)
        assert not waiting.done()
    finally:
        for stream in streams:
            stream.cancel()
    assert len(waiting.result(timeout=TIMEOUT).models) == 2
