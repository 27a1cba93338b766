"""The call guard (service/server/guard.py): the grpc internals it relies on (when a grpcio upgrade
changes one of them, these fail, naming it), and unknown methods. Its behaviour through real
servers is tested where each feature is: malformed requests in tests/validation, health on its
own threads in test_health.py, the drain's count of calls in tests/drain."""

from __future__ import annotations

import inspect
from concurrent import futures

import grpc
import grpc._server

from jitnet.service.protocols import fastpath
from jitnet.service.server import guard
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import DATASET_RPCS, RPCS, SERVICE, TIMEOUT, C, code_of


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
    assert (SERVICE, sorted(RPCS + DATASET_RPCS)) in calls


def test_only_marked_handlers_may_answer_with_bytes():
    pool = futures.ThreadPoolExecutor(max_workers=1)

    def serialize(message):
        return b"serialized"

    def plain(request, context):
        return None

    @fastpath.may_return_bytes
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


def test_unknown_methods_answer_unimplemented_and_are_not_remembered(server):
    """The guard keeps its wrapped handlers by method name: only for methods that exist, or
    any name a client makes up would stay in memory."""
    for k in range(3):
        call = server.channel.unary_unary(f"/{SERVICE}/Nope{k}")
        assert code_of(lambda call=call: call(b"", timeout=TIMEOUT)) == C.UNIMPLEMENTED

    class Details:
        def __init__(self, method):
            self.method, self.invocation_metadata = method, ()

    known = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    inner = grpc.method_handlers_generic_handler("s.S", {"Known": known})
    generic = guard._GuardedGeneric(
        inner, guard.CallGuard(futures.ThreadPoolExecutor(max_workers=1)))
    for k in range(100):
        assert generic.service(Details(f"/s.S/Made-up-{k}")) is None
    wrapped = generic.service(Details("/s.S/Known"))
    assert wrapped is not None and generic.service(Details("/s.S/Known")) is wrapped
    assert list(generic._wrapped) == ["/s.S/Known"]
