"""GRPCInferenceService (the Open Inference Protocol, "KServe V2"): thin, like NetworkService.

Each RPC translates (convert), delegates (the store, the prediction entry, the health
servicer) and translates back; status.mapped turns errors into statuses through the same table
as jitnet.v1, so both protocols refuse the same request with the same status. ModelInfer of one
raw FP64 row is answered by fastpath.infer_reply when it can, as Predict is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from jitnet.inference import open_inference_grpc_pb2 as pb
from jitnet.inference import open_inference_grpc_pb2_grpc as pb_grpc

from ...config import Limits
from ...errors import FailedPrecondition, InvalidArgument, NotFound
from ...store import ModelRecord, ModelStore, validate_id
from .. import fastpath, limits, prediction
from ..fastpath import may_return_bytes
from ..health import check_ready
from ..status import mapped
from . import convert

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, store: ModelStore, limits_: Limits, ready: threading.Event,
                 serving: Callable[[], bool]):
        """`ready`: set once warmed up and loaded (the servicers' gate); `serving`: whether
        grpc.health.v1 says SERVING (ServerReady answers exactly that)."""
        self._store = store
        self._limits = limits_
        self._ready = ready
        self._serving = serving

    def _get(self, name: str, field: str = "model_name") -> ModelRecord:
        """The store's get, whose message for a malformed id names this protocol's field."""
        try:
            return self._store.get(name)
        except InvalidArgument:
            validate_id(name, field)  # raises the same error, naming `field`
            raise

    @mapped
    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @mapped
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._serving())

    @mapped
    def ModelReady(self, request, context):
        # Not ready is an answer, not an error: tritonclient raises on any error status, and
        # Triton answers an unknown model with ready false too. A malformed name is an error.
        if not self._ready.is_set():
            return pb.ModelReadyResponse(ready=False)
        try:
            version = convert.requested_version(request.name, request.version)
            record = self._get(request.name, "name")
        except (NotFound, FailedPrecondition):  # unknown, or its stored file is unreadable
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=version in (None, record.version))

    @mapped
    def ServerMetadata(self, request, context):
        return convert.server_metadata()

    @mapped
    def ModelMetadata(self, request, context):
        check_ready(self._ready)
        version = convert.requested_version(request.name, request.version)
        record = self._get(request.name, "name")
        prediction.require_version(record, version)
        return convert.model_metadata(record)

    @may_return_bytes
    @mapped
    def ModelInfer(self, request, context):
        check_ready(self._ready)
        reply = fastpath.infer_reply(self._get, request, self._limits.max_message_bytes)
        if reply is not None:
            return reply
        inp = convert.infer_input(request)
        result = prediction.predict(
            lambda name, _min_version: self._get(name),  # the protocol has no min_version
            self._limits, request.model_name, inp.rows, lambda: convert.decode(inp),
            version=convert.requested_version(request.model_name, request.model_version))
        reply = convert.infer_response(request, inp, result.outputs, result.version)
        limits.check_message(self._limits, reply.ByteSize(), "the ModelInfer reply")
        return reply
