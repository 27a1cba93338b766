"""Observability: Prometheus metrics, the access log with request ids, OpenTelemetry traces.

All three are off by default; `Observer.of(config, store)` is None then, and nothing here is on
any call's path. When one is on, the call guard hands every handler it wraps (server/guard.py,
at registration) to `Observer.wrap`, which returns the handler measured: per method, label values
and counts bound once, here, not looked up per call. The engine and the store report through
events.Events, which the Observer implements.

    metrics.py  the registry, the per-method counts (grpc-ecosystem names), jitnet's own
    logs.py     text / JSON log lines, request ids, the access line
    tracing.py  spans (imported only with --tracing on; it needs the `otel` extra)

What a call's measurements cover: from the handler's start to its return (or, for a stream,
its last message), with the status the handler ended with: an abort's code (status.mapped
aborts for every error), INVALID_ARGUMENT for a request that did not parse (the guard), UNKNOWN
for an exception nobody mapped. Calls grpc refuses before any handler runs are not counted:
unknown methods (their names are the client's), a wrong token, over max_concurrent_calls or the
message size limit.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

import grpc

from ..events import Events
from . import logs

HEALTH_SERVICE = "grpc.health.v1.Health"  # probes: counted, but no access line and no span
OK = grpc.StatusCode.OK
UNKNOWN = grpc.StatusCode.UNKNOWN
CANCELLED = grpc.StatusCode.CANCELLED

UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI_STREAM = (
    "unary", "server_stream", "client_stream", "bidi_stream")  # grpc_type's values


class Observer(Events):
    """What one server observes: made by create_server when any of the three is on."""

    def __init__(self, config, store=None):
        self.metrics = None
        self.tracing = None
        self.access_log = bool(config.access_log)
        if config.metrics_port is not None:
            from .metrics import Metrics
            self.metrics = Metrics(store)
        if config.tracing:
            from .tracing import Tracing
            self.tracing = Tracing()
        if self.access_log:
            logs.enable_access_log()
        self.metrics_port: int | None = None
        self._close_lock = threading.Lock()

    @classmethod
    def of(cls, config, store=None) -> Observer | None:
        if config.metrics_port is None and not config.access_log and not config.tracing:
            return None
        return cls(config, store)

    def serve_metrics(self, host: str, port: int) -> None:
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(host, port)

    def close(self) -> None:
        """Stops /metrics and flushes spans (after the server stopped)."""
        with self._close_lock:
            if self.metrics is not None:
                self.metrics.close()
            if self.tracing is not None:
                self.tracing.flush()

    # -- events.Events ---------------------------------------------------------------------------

    def chunk_trained(self, epochs, iterations, seconds, loss) -> None:
        if self.metrics is not None:
            self.metrics.train_epochs.inc(epochs)
            self.metrics.train_iterations.inc(iterations)
        if self.tracing is not None:
            self.tracing.child("jitnet.train.chunk", seconds, {
                "jitnet.epochs": epochs, "jitnet.iterations": iterations, "jitnet.loss": loss})

    def diverged(self) -> None:
        if self.metrics is not None:
            self.metrics.divergences.inc()

    def committed(self, model_id, version, seconds) -> None:
        if self.metrics is not None:
            self.metrics.commit_seconds.observe(seconds)
        if self.tracing is not None:
            self.tracing.child("jitnet.store.commit", seconds, {
                "jitnet.model_id": model_id, "jitnet.model_version": version})

    def lease_refused(self, model_id) -> None:
        if self.metrics is not None:
            self.metrics.lease_conflicts.inc()

    def store_failed(self, model_id, kind) -> None:
        if self.metrics is not None:
            self.metrics.store_errors.labels(kind).inc()

    def warmed_up(self, seconds) -> None:
        if self.metrics is not None:
            self.metrics.warmup_seconds.set(seconds)

    # -- handlers --------------------------------------------------------------------------------

    def wrap(self, method: str, kind: str, behavior, request_class=None,
             non_blocking: bool = False):
        """`behavior` (a handler's function) measured. `kind` is a grpc_type value;
        `request_class` the request message's class (None for request streams, or unknown);
        `non_blocking`: the behavior replies through a callback (health Watch)."""
        site = _Site(self, method, kind, request_class)
        if site.metrics is None and not site.detailed:
            return behavior  # health with the access log or traces only: nothing to observe
        if non_blocking:
            return _non_blocking(site, behavior)
        if kind == UNARY and not site.detailed:
            return _counted_unary(site.metrics, behavior)  # the hot path: Predict
        if kind in (UNARY, CLIENT_STREAM):
            return _observed_unary(site, behavior)
        return _observed_stream(site, behavior)


class _Site:
    """What is fixed per method: its names, its counts, how to read its requests."""

    def __init__(self, observer: Observer, method: str, kind: str, request_class):
        self.method = method
        self.name = method.lstrip("/")  # service/method, as logs and spans show it
        self.service = self.name.rpartition("/")[0]
        self.kind = kind
        self.request_class = request_class
        self.model_of, self.rows_of = _readers(request_class)
        self.metrics = (observer.metrics.method(kind, method, self.rows_of)
                        if observer.metrics is not None else None)
        self.tracing = observer.tracing if self.service != HEALTH_SERVICE else None
        self.access_log = observer.access_log and self.service != HEALTH_SERVICE
        self.detailed = bool(self.tracing or self.access_log)
        self.streams_requests = kind in (CLIENT_STREAM, BIDI_STREAM)


def _counted_unary(method_metrics, behavior):
    """Metrics only, for a unary method: what every Predict pays with metrics on (about 1 us
    in a loop; everything it needs is bound here, once)."""
    from .metrics import OK_INDEX, ROWS_BUCKETS, SECONDS_BUCKETS

    local = method_metrics.local
    rows_of = method_metrics.rows_of
    perf = time.perf_counter
    bucket = bisect.bisect_left
    ok = OK_INDEX

    def call(request, context):
        counts = local.counts  # this thread's own
        counts.started += 1
        counts.received += 1
        began = perf()
        try:
            reply = behavior(request, context)
        except BaseException:
            counts.finish(context.code() or UNKNOWN, perf() - began)
            raise
        seconds = perf() - began
        counts.sent += 1
        code = context.code()
        if code is None or code is OK:
            counts.codes[ok] += 1
            counts.seconds[bucket(SECONDS_BUCKETS, seconds)] += 1
            counts.seconds_sum += seconds
            if rows_of is not None:
                # A reply the handler encoded itself is the one-sample fast path's (guard.
                # may_return_bytes): one row, and the request's protobuf is not read again.
                rows = 1 if type(reply) is bytes else rows_of(request)
                counts.rows[bucket(ROWS_BUCKETS, rows)] += 1
                counts.rows_sum += rows
        else:
            counts.finish(code, seconds)
        return reply

    return call


class _Call:
    """One call's measurements on the general path (streams, access log, traces)."""

    __slots__ = ("site", "request", "context", "began", "messages", "rows", "model_id",
                 "span", "token", "request_id_token", "ended")

    def __init__(self, site: _Site, request, context):
        self.site, self.request, self.context = site, request, context
        self.messages = 0
        self.rows = self.model_id = self.span = self.token = self.request_id_token = None
        self.ended = False
        if site.metrics is not None:
            counts = site.metrics.local.counts
            counts.started += 1
            if not site.streams_requests:
                counts.received += 1
        if site.detailed:
            metadata = context.invocation_metadata()
            if site.access_log:
                rid = logs.request_id(metadata)
                self.request_id_token = logs.REQUEST_ID.set(rid)
                context.set_trailing_metadata((("x-request-id", rid),))
            if site.request_class is not None and isinstance(request, site.request_class):
                self.model_id = site.model_of(request) if site.model_of else None
                self.rows = site.rows_of(request) if site.rows_of else None
            if site.tracing is not None:
                attributes = {}
                if self.model_id:
                    attributes["jitnet.model_id"] = self.model_id
                if self.rows is not None:
                    attributes["jitnet.rows"] = self.rows
                if self.request_id_token is not None:
                    attributes["jitnet.request_id"] = logs.REQUEST_ID.get()
                self.span, self.token = site.tracing.start(site.method, metadata, attributes)
        self.began = time.perf_counter()

    def received(self) -> None:
        if self.site.metrics is not None:
            self.site.metrics.local.counts.received += 1

    def sent(self) -> None:
        self.messages += 1
        if self.site.metrics is not None:
            self.site.metrics.local.counts.sent += 1

    def end(self, code: grpc.StatusCode) -> None:
        if self.ended:
            return
        self.ended = True
        seconds = time.perf_counter() - self.began
        site = self.site
        if site.metrics is not None:
            counts = site.metrics.local.counts
            counts.finish(code, seconds)
            if code is OK and site.rows_of is not None and self.request is not None:
                counts.count_rows(self.rows if self.rows is not None
                                  else site.rows_of(self.request))
        trace_id = None
        if self.span is not None:
            trace_id = site.tracing.trace_id(self.span)
            attributes = {"jitnet.messages": self.messages} if site.kind != UNARY else {}
            site.tracing.end(self.span, self.token, code, attributes)
        if site.access_log:
            logs.access(site.name, _code_name(code), seconds, self.context.peer(),
                        self.model_id, self.rows,
                        self.messages if site.kind in (SERVER_STREAM, BIDI_STREAM) else None,
                        trace_id)
        if self.request_id_token is not None:
            try:
                logs.REQUEST_ID.reset(self.request_id_token)
            except ValueError:  # a stream closed by the collector, outside the call's context
                pass


def _called(site: _Site, behavior, request, context) -> tuple[_Call, object]:
    """Runs the handler under a new watch (a stream of requests counted as it is read);
    a handler that raises ends its watch with the call's code."""
    if site.streams_requests:
        watch = _Call(site, None, context)
        request = _counting_requests(request, watch)
    else:
        watch = _Call(site, request, context)
    try:
        return watch, behavior(request, context)
    except BaseException:
        watch.end(context.code() or UNKNOWN)
        raise


def _observed_unary(site: _Site, behavior):
    def call(request, context):
        watch, reply = _called(site, behavior, request, context)
        watch.sent()
        watch.end(context.code() or OK)
        return reply

    return call


def _observed_stream(site: _Site, behavior):
    def call(request, context):
        watch, responses = _called(site, behavior, request, context)
        return _counting_responses(responses, watch, context)

    return call


def _counting_responses(responses, watch: _Call, context):
    code = CANCELLED  # unless it ends otherwise: grpc dropped the stream (client gone)
    try:
        for response in responses:
            yield response
            watch.sent()  # grpc came back for the next one: this one was sent
        code = context.code() or OK
    except GeneratorExit:
        raise
    except BaseException:
        code = context.code() or UNKNOWN
        raise
    finally:
        watch.end(code)


def _counting_requests(requests, watch: _Call):
    for request in requests:
        watch.received()
        yield request


def _non_blocking(site: _Site, behavior):
    """A behavior that returns at once and replies through a callback (health Watch): the
    stream ends when the callback gets None, or when the call terminates (cancelled)."""

    def call(request, context, send):
        watch = _Call(site, request, context)
        lock = threading.Lock()

        def counted_send(response):
            if response is None:
                with lock:
                    watch.end(context.code() or OK)
            else:
                watch.sent()
            send(response)

        def terminated():
            with lock:
                watch.end(context.code() or CANCELLED)

        context.add_callback(terminated)
        return behavior(request, context, counted_send)

    return call


def _readers(request_class) -> tuple[Callable | None, Callable | None]:
    """How to read a request's model id and rows, from its message type: the model id is a
    string field `model_id` (jitnet.v1) or `model_name` (the inference protocol); the rows are
    the first dimension of the `inputs` tensor (the first tensor, when repeated)."""
    descriptor = getattr(request_class, "DESCRIPTOR", None)
    if descriptor is None:
        return None, None
    fields = descriptor.fields_by_name
    model_of = None
    for name in ("model_id", "model_name"):
        field = fields.get(name)
        if field is not None and field.type == field.TYPE_STRING and not _repeated(field):
            model_of = _attribute(name)
            break
    rows_of = None
    inputs = fields.get("inputs")
    if (inputs is not None and inputs.message_type is not None
            and "shape" in inputs.message_type.fields_by_name):
        rows_of = _first_tensor_rows if _repeated(inputs) else _tensor_rows
    return model_of, rows_of


def _repeated(field) -> bool:
    # FieldDescriptor.label is deprecated in newer protobuf; is_repeated replaces it.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag
    return field.label == field.LABEL_REPEATED


def _attribute(name: str):
    def read(request):
        return getattr(request, name) or None
    return read


def _tensor_rows(request) -> int:
    try:
        return request.inputs.shape[0]
    except IndexError:  # no shape
        return 0


def _first_tensor_rows(request) -> int:
    inputs = request.inputs
    if not inputs:
        return 0
    shape = inputs[0].shape
    return shape[0] if shape else 0


def _code_name(code: grpc.StatusCode) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
