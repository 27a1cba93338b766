"""NetworkService (jitnet.v1): thin. Each RPC translates (convert), delegates (store, model,
training, the prediction entry) and translates back; status.mapped turns errors into statuses.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from ...config import Limits
from ...engine import training
from ...engine.model import Network
from ...errors import InvalidArgument
from ...events import QUIET, Events
from ...store import ModelStore, new_id, validate_id
from .. import fastpath, limits, prediction
from ..fastpath import may_return_bytes
from ..health import check_ready
from ..status import mapped, stop_signal
from . import convert

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class TrainData(NamedTuple):
    """What a Train trains and validates on (decoded, not yet checked against the model)."""

    inputs: np.ndarray
    targets: np.ndarray
    sample_weights: np.ndarray | None
    validation: tuple[np.ndarray, np.ndarray] | None


class NetworkServicer(pb_grpc.NetworkServiceServicer):
    def __init__(self, store: ModelStore, limits_: Limits, ready: threading.Event,
                 events: Events = QUIET):
        self._store = store
        self._events = events
        self._get_record = store.get
        self._limits = limits_
        self._ready = ready

    def _check_ready(self) -> None:
        check_ready(self._ready)

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
        metadata = convert.metadata_from_proto(request.metadata)
        record = self._store.create(model_id, arch, net.params, metadata)
        # The reply carries the weights, in the form the request's layers used, unless they
        # would not fit in one message: the model exists either way.
        raw = any(layer.weights.raw for layer in request.layers)
        fits = limits.model_with_weights_bound(arch) <= self._limits.max_message_bytes
        reply = pb.CreateModelResponse(model=convert.model_to_proto(record, fits, raw))
        if fits and reply.ByteSize() > self._limits.max_message_bytes:  # the bound was wrong
            reply = pb.CreateModelResponse(model=convert.model_to_proto(record))
        return reply

    @mapped
    def GetModel(self, request, context):
        self._check_ready()
        record = self._store.get_at_least(request.model_id, request.min_version)
        if request.include_weights:  # refuse before building a reply that cannot be sent
            limits.check_weights_reply(self._limits, record.arch, record.id)
        reply = pb.GetModelResponse(
            model=convert.model_to_proto(record, request.include_weights, request.raw))
        limits.check_message(self._limits, reply.ByteSize(),
                             f"the reply with the weights of model '{record.id}'")
        return reply

    @mapped
    def ListModels(self, request, context):
        self._check_ready()
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)  # AIP-158: coerce
        records, more = self._store.page(convert.page_start(request.page_token), size)
        return pb.ListModelsResponse(
            models=[convert.model_to_proto(r) for r in records],
            next_page_token=convert.page_token(records[-1].id) if more and records else "")

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
        options = convert.train_options(request)
        data = self._train_data(request, options)
        with self._store.lease(request.model_id) as lease:
            start = lease.record
            for progress in training.train(start.network, data.inputs, data.targets, options,
                                           state=start.optimizer, should_stop=should_stop,
                                           events=self._events,
                                           sample_weights=data.sample_weights,
                                           validation=data.validation):
                # Commit before telling anyone: the version in the message is durable.
                record = lease.commit(progress.params, progress.optimizer,
                                      last_loss=progress.params_loss,
                                      epochs_trained=start.epochs_trained + progress.epoch,
                                      iterations=start.iterations + progress.iterations)
                yield convert.train_response(progress, record.version)

    def _train_data(self, request, options) -> TrainData:
        """The arrays a Train trains and validates on, within the limits: the one place that
        knows where they come from (the request's tensors; stored data sets are not served
        yet)."""
        for field in ("dataset_id", "validation_dataset_id"):
            if getattr(request, field):
                raise InvalidArgument(f"{field} is set, but this server keeps no data sets yet; "
                                      "send inputs and targets (and validation_inputs and "
                                      "validation_targets) in the request")
        rows = convert.rows_of(request.inputs)
        limits.check_rows(self._limits, rows, "inputs")
        validation_rows = convert.rows_of(request.validation_inputs)
        limits.check_rows(self._limits, validation_rows, "validation_inputs")
        limits.check_work(self._limits, options.epochs, rows + validation_rows)
        return TrainData(convert.to_array(request.inputs, "inputs"),
                         convert.to_array(request.targets, "targets"),
                         convert.sample_weights_from_proto(request),
                         convert.validation_from_proto(request))

    @mapped
    def Step(self, request, context):
        self._check_ready()
        inputs, target = convert.vector(request.input), convert.vector(request.target)
        if request.dry_run:
            record = self._store.get_at_least(request.model_id, request.min_version)
            limits.check_step_reply(self._limits, record.arch, record.id)
            result = record.network.step(inputs, target, request.learning_rate)
            return convert.step_response(result, record.version)
        with self._store.lease(request.model_id) as lease:
            limits.check_step_reply(self._limits, lease.record.arch, lease.record.id)
            result = lease.record.network.step(inputs, target, request.learning_rate)
            # One plain gradient step: the optimizer's state stays as it was.
            record = lease.commit(result.params, lease.record.optimizer, last_loss=result.loss,
                                  iterations=lease.record.iterations + 1)
        return convert.step_response(result, record.version)

    @mapped
    def CheckGradients(self, request, context):
        self._check_ready()
        should_stop = stop_signal(context)
        inputs, target = convert.vector(request.input), convert.vector(request.target)
        record = self._store.get(request.model_id)  # a read, like a dry-run Step
        limits.check_gradient_check(self._limits, record.arch, record.id)
        result = record.network.check_gradients(inputs, target, request.epsilon,
                                                should_stop=should_stop)
        return convert.gradient_check_response(result, record.version)

    @may_return_bytes
    @mapped
    def Predict(self, request, context):
        self._check_ready()
        reply = fastpath.predict_reply(self._get_record, request, self._limits.max_message_bytes)
        if reply is not None:
            return reply
        tensor = request.inputs
        raw = tensor.raw  # a copy per read: read once
        result = prediction.predict(
            self._store.get_at_least, self._limits, request.model_id, convert.rows_of(tensor),
            lambda: convert.to_array(tensor, "inputs", raw, read_only=True),
            min_version=request.min_version)
        reply = pb.PredictResponse(model_version=result.version)
        convert.write_array(reply.outputs, result.outputs, bool(raw))  # filled in place
        limits.check_message(self._limits, reply.ByteSize(), "the Predict reply")
        return reply
