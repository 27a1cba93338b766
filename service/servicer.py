"""NetworkService: thin. Each RPC translates (convert), delegates (store, model, training) and
translates back. One decorator maps every domain error to its status through one table.
"""

from __future__ import annotations

import base64
import functools
import inspect
import logging
import threading
import uuid

import grpc

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from . import convert, errors, limits, training
from .config import Limits
from .model import Network
from .store import Store, new_id, validate_id

_LOGGER = logging.getLogger(__name__)

# api.md "Errors": the one table. Looked up along the exception's MRO, most specific first.
STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Busy: grpc.StatusCode.ABORTED,
    errors.Diverged: grpc.StatusCode.FAILED_PRECONDITION,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,  # DEADLINE_EXCEEDED when the deadline passed
    errors.StorageFailed: grpc.StatusCode.INTERNAL,
}

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def status_of(exc: BaseException, context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str]:
    for kind in type(exc).__mro__:
        code = STATUS.get(kind)
        if code is not None:
            if code is grpc.StatusCode.CANCELLED and _deadline_passed(context):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            return code, str(exc)
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error("internal error, incident %s", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, (f"internal server error (incident {incident}); the "
                                      "server's log has the details")


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def mapped(method):
    """The only place that aborts: domain errors -> status per STATUS; anything else INTERNAL."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                context.abort(*status_of(exc, context))
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            context.abort(*status_of(exc, context))
    return unary


def stop_signal(context: grpc.ServicerContext):
    """should_stop for long work: the client cancelled, its deadline passed, or the server cut
    the call (grace expired). The callback fires on any of these."""
    event = threading.Event()
    context.add_callback(event.set)
    return lambda: event.is_set() or _deadline_passed(context)


class NetworkServicer(pb_grpc.NetworkServiceServicer):
    def __init__(self, store: Store, limits_: Limits, ready: threading.Event):
        self._store = store
        self._limits = limits_
        self._ready = ready

    def _check_ready(self) -> None:
        if not self._ready.is_set():
            raise errors.Unavailable("the server is starting (compiling kernels, loading "
                                     "models); retry in a moment")

    @mapped
    def CreateModel(self, request, context):
        self._check_ready()
        model_id = validate_id(request.model_id) if request.model_id else new_id()
        limits.check_architecture(self._limits, request.architecture.layer_sizes,
                                  convert.bias_of(request.architecture))
        arch = convert.architecture_from_proto(request.architecture)
        init = convert.init_from_proto(request.init)  # an unknown init is refused with layers too
        if request.layers:
            net = Network.from_layers(arch, convert.layers_from_proto(request.layers))
        else:
            net = Network.initialise(arch, init, request.seed)
        record = self._store.create(model_id, arch, net.params)
        # The reply carries the weights, in the form the request's layers used, unless they
        # would not fit in one message: the model exists either way.
        raw = any(layer.weights.raw for layer in request.layers)
        fits = 8 * arch.n_params + 64 * arch.n_layers + 4096 <= self._limits.max_message_bytes
        reply = pb.CreateModelResponse(model=convert.model_to_proto(record, fits, raw))
        if fits and reply.ByteSize() > self._limits.max_message_bytes:
            reply = pb.CreateModelResponse(model=convert.model_to_proto(record))
        return reply

    @mapped
    def GetModel(self, request, context):
        self._check_ready()
        record = self._store.get(request.model_id)
        if request.include_weights:  # refuse before building a reply that cannot be sent
            limits.check_message(self._limits, 8 * record.arch.n_params,
                                 f"the reply with the weights of model '{record.id}'")
        reply = pb.GetModelResponse(
            model=convert.model_to_proto(record, request.include_weights, request.raw))
        limits.check_message(self._limits, reply.ByteSize(),
                             f"the reply with the weights of model '{record.id}'")
        return reply

    @mapped
    def ListModels(self, request, context):
        self._check_ready()
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)  # AIP-158: coerce
        records, more = self._store.page(_decode_token(request.page_token), size)
        return pb.ListModelsResponse(
            models=[convert.model_to_proto(r) for r in records],
            next_page_token=_encode_token(records[-1].id) if more and records else "")

    @mapped
    def DeleteModel(self, request, context):
        self._check_ready()
        self._store.delete(request.model_id)
        return pb.DeleteModelResponse()

    @mapped
    def Train(self, request, context):
        self._check_ready()
        should_stop = stop_signal(context)
        validate_id(request.model_id)
        rows = convert.rows_of(request.inputs)
        limits.check_rows(self._limits, rows, "inputs")
        limits.check_work(self._limits, request.epochs, rows)
        options = convert.train_options(request)
        inputs = convert.to_array(request.inputs, "inputs")
        targets = convert.to_array(request.targets, "targets")
        with self._store.lease(request.model_id) as lease:
            start = lease.record
            for progress in training.train(start.network, inputs, targets, options,
                                           velocity=start.velocity, should_stop=should_stop):
                # Commit before telling anyone: the version in the message is durable.
                record = lease.commit(progress.params, progress.velocity, last_loss=progress.loss,
                                      epochs_trained=start.epochs_trained + progress.epoch,
                                      iterations=start.iterations + progress.iterations)
                yield convert.train_response(progress, record.version)

    @mapped
    def Step(self, request, context):
        self._check_ready()
        inputs, target = convert.vector(request.input), convert.vector(request.target)
        if request.dry_run:
            record = self._store.get(request.model_id)
            _check_step_reply(self._limits, record)
            result = record.network.step(inputs, target, request.learning_rate)
            return convert.step_response(result, record.version)
        with self._store.lease(request.model_id) as lease:
            # Before the step: a reply that cannot be sent must not follow a commit.
            _check_step_reply(self._limits, lease.record)
            result = lease.record.network.step(inputs, target, request.learning_rate)
            record = lease.commit(result.params, lease.record.velocity, last_loss=result.loss,
                                  iterations=lease.record.iterations + 1)
        return convert.step_response(result, record.version)

    @mapped
    def Predict(self, request, context):
        # The hot path (benchmarks/serve.py): each field read once (a read of `raw` copies the
        # bytes), no logging.
        self._check_ready()
        model_id, tensor = request.model_id, request.inputs
        raw, dims = tensor.raw, tensor.shape
        if raw and len(dims) == 2 and dims[0] == 1 and len(raw) == 8 * dims[1] \
                and not len(tensor.values):
            # One sample in raw form, the latency case: a well-formed tensor, so checking the
            # model first refuses what the general path would. Anything the fast path cannot
            # answer (wrong width, inputs not finite) goes on to the general path, which says
            # what is wrong.
            record = self._store.get(model_id)
            outputs = record.network.predict_sample_raw(raw)
            if outputs is not None:
                reply = convert.one_row_predict_reply(outputs, record.arch.layer_sizes[-1],
                                                      record.version)
                if len(reply) <= self._limits.max_message_bytes:
                    return reply
        limits.check_rows(self._limits, convert.rows_of(tensor), "inputs")
        inputs = convert.to_array(tensor, "inputs", raw, read_only=True)
        record = self._store.get(model_id)  # validates the id
        # The outputs are allocated before the reply is measured: refuse a reply that is sure
        # to be too big first (rows x outputs x 8 bytes), whatever the rows limit allows.
        rows = inputs.shape[0] if inputs.ndim == 2 else 1
        limits.check_message(self._limits, 8 * rows * record.arch.layer_sizes[-1],
                             "the Predict reply")
        outputs = predict(record, inputs)
        reply = pb.PredictResponse(model_version=record.version)  # filled in place
        convert.write_array(reply.outputs, outputs, bool(raw))
        limits.check_message(self._limits, reply.ByteSize(), "the Predict reply")
        return reply


def predict(record, inputs):
    """Outputs of one committed version (a store record) for decoded inputs. The record's
    Network is built once per version and keeps per-thread scratch: nothing is allocated per
    call but the outputs. warmup.py predicts through this function, so both stay in step."""
    return record.network.predict(inputs)


def _check_step_reply(limits_: Limits, record) -> None:
    """A Step reply carries every layer's weights twice (before and after) and four numbers a
    neuron, as doubles: an upper bound of its size, so that a Step is refused before its
    commit rather than failing to send its reply after it."""
    arch = record.arch
    limits.check_message(limits_, 16 * arch.n_params + 32 * arch.n_units + 160 * arch.n_layers
                         + 64, f"the Step reply with the weights of model '{record.id}'")


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(b"after:" + last_id.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    """The id after which the page starts ("" for the first page)."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("after:"):
        raise errors.InvalidArgument("page_token is not one this server gave out; use the "
                                     "next_page_token of the previous ListModels reply")
    return validate_id(text[len("after:"):], "page_token")
