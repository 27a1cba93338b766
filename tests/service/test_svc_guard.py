"""The grpc internals the call guard (service/guard.py) relies on. When a grpcio upgrade changes
one of them, these fail, naming it; the guard's behaviour is tested through real servers in
test_svc_lifecycle.py (malformed requests, health on its own threads, the drain's count)."""

from __future__ import annotations

import inspect
from concurrent import futures

import grpc
import grpc._server

from jitnet.service import guard
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc


def test_method_handlers_are_namedtuples_copied_with_replace():
    def behavior(request, context):
        return b""

    def other(request, context):
        return b"!"

    handler = grpc.unary_unary_rpc_method_handler(behavior)
    copy = guard._replaced(handler, unary_unary=other)
    assert copy.unary_unary is other and handler.unary_unary is behavior
    assert copy.request_streaming is False and copy.response_streaming is False


def test_grpc_server_reads_the_behaviour_attributes_the_guard_sets():
    source = inspect.getsource(grpc._server)
    for attribute in (guard.NON_BLOCKING, guard.THREAD_POOL):
        assert attribute in source, f"grpc._server no longer reads {attribute}"


def test_generated_code_registers_methods_by_name_through_the_stand_in():
    calls = []

    class Recording:
        def add_generic_rpc_handlers(self, handlers):
            calls.append(("generic", len(handlers)))

        def add_registered_method_handlers(self, service, handlers):
            calls.append((service, sorted(handlers)))

    assert hasattr(grpc.Server, guard.REGISTERED_METHODS)
    registering = guard.Registering(Recording(), guard.CallGuard(
        futures.ThreadPoolExecutor(max_workers=1)))
    pb_grpc.add_NetworkServiceServicer_to_server(pb_grpc.NetworkServiceServicer(), registering)
    assert ("generic", 1) in calls
    assert ("jitnet.v1.NetworkService", sorted(
        ["CreateModel", "GetModel", "ListModels", "DeleteModel", "Train", "Step", "Predict",
         "CheckGradients"]
    )) in calls


def test_only_marked_handlers_may_answer_with_bytes():
    pool = futures.ThreadPoolExecutor(max_workers=1)

    def serialize(message):
        return b"serialized"

    def plain(request, context):
        return None

    @guard.may_return_bytes
    def encoded(request, context):
        return b"encoded"

    wrap = guard.CallGuard(pool).wrap
    marked = wrap("/s.S/A", grpc.unary_unary_rpc_method_handler(
        encoded, response_serializer=serialize))
    unmarked = wrap("/s.S/B", grpc.unary_unary_rpc_method_handler(
        plain, response_serializer=serialize))
    assert marked.response_serializer(b"encoded") == b"encoded"
    assert marked.response_serializer(object()) == b"serialized"
    assert unmarked.response_serializer is serialize
