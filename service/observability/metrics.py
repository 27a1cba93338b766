"""Prometheus metrics of one server, served at http://HOST:METRICS_PORT/metrics.

Two kinds, with bounded label sets (no label carries a model id: ids are chosen by clients,
so a label per model would grow without bound; the access log and traces carry model ids):

  * per gRPC method, under the names of the grpc-ecosystem interceptors (go-grpc-prometheus,
    py-grpc-prometheus), so their dashboards and alerts work unchanged: grpc_server_started_total,
    grpc_server_handled_total (with grpc_code as grpc-go spells it: OK, InvalidArgument, ...),
    grpc_server_msg_received_total, grpc_server_msg_sent_total, grpc_server_handling_seconds;
    and jitnet_request_rows, the rows of each call that carries an `inputs` tensor. Labels:
    grpc_type, grpc_service, grpc_method (bounded by the registered methods; names a client
    made up are not counted) and grpc_code (the 17 status codes).
  * jitnet's own, from events.Events reports and the store: Train epochs and iterations,
    divergences, commits and their seconds, lease conflicts, store failures by kind, models
    stored, the warm-up's seconds; and the process and Python collectors.

The per-method counts are on every call's path, so they are not prometheus_client objects
(a lock per increment): each thread keeps its own counts in plain integers, which only it
writes, and a scrape sums them. Counts bound once per method, when the handler is wrapped.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..events import STORE_FAILURES
from ..store import ModelStore

# Handling seconds: a one-sample Predict takes ~0.1 ms, 1,000 rows ~2 ms, Train seconds to
# minutes. (go-grpc-prometheus's default starts at 5 ms, where every Predict would fall.)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000, 1_000_000)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# grpc-go's codes.Code.String(): the grpc_code values existing dashboards and alerts match.
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown", grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded", grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted", grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented", grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable", grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
CODES = tuple(GO_CODE_NAMES)
CODE_INDEX = {code: i for i, code in enumerate(CODES)}
OK_INDEX = CODE_INDEX[grpc.StatusCode.OK]

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class Counts:
    """One thread's counts of one method. Only that thread writes them."""

    __slots__ = ("started", "received", "sent", "codes", "seconds", "seconds_sum", "rows",
                 "rows_sum")

    def __init__(self):
        self.started = self.received = self.sent = 0
        self.codes = [0] * len(CODES)
        self.seconds = [0] * (len(SECONDS_BUCKETS) + 1)  # per bucket, not cumulative
        self.seconds_sum = 0.0
        self.rows = [0] * (len(ROWS_BUCKETS) + 1)
        self.rows_sum = 0

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        """A call ended with `code` after `seconds` (the path of everything but a unary OK)."""
        self.codes[CODE_INDEX.get(code, CODE_INDEX[grpc.StatusCode.UNKNOWN])] += 1
        self.seconds[bisect.bisect_left(SECONDS_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds

    def count_rows(self, rows: int) -> None:
        self.rows[bisect.bisect_left(ROWS_BUCKETS, rows)] += 1
        self.rows_sum += rows


class MethodMetrics:
    """The counts of one method: `.local.counts` is the calling thread's own Counts."""

    def __init__(self, kind: str, service: str, method: str,
                 rows_of: Callable[[object], int] | None):
        self.labels = (kind, service, method)
        self.rows_of = rows_of  # reads the rows of a request; None: no inputs tensor
        self._lock = threading.Lock()
        self._all: list[Counts] = []
        owner = self

        class _PerThread(threading.local):
            def __init__(self):
                self.counts = owner._new_counts()

        self.local = _PerThread()

    def _new_counts(self) -> Counts:
        counts = Counts()
        with self._lock:
            self._all.append(counts)
        return counts

    def total(self) -> Counts:
        """Every thread's counts summed (a thread may be adding one call meanwhile)."""
        with self._lock:
            parts = list(self._all)
        out = Counts()
        for part in parts:
            out.started += part.started
            out.received += part.received
            out.sent += part.sent
            out.seconds_sum += part.seconds_sum
            out.rows_sum += part.rows_sum
            for dst, src in ((out.codes, part.codes), (out.seconds, part.seconds),
                             (out.rows, part.rows)):
                for i, value in enumerate(src):
                    dst[i] += value
        return out


class Metrics:
    """The registry of one server, its collectors and jitnet's own metrics."""

    def __init__(self, store: ModelStore | None = None):
        self.registry = CollectorRegistry()
        self._methods: dict[str, MethodMetrics] = {}
        self._methods_lock = threading.Lock()
        self.registry.register(_GrpcCollector(self))
        if store is not None:
            self.registry.register(_StoreCollector(store))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.train_epochs = Counter("jitnet_train_epochs", "Epochs trained by Train calls "
                                    "(every chunk that ran, a diverged one included).",
                                    registry=r)
        self.train_iterations = Counter("jitnet_train_iterations", "Training iterations "
                                        "(samples) run by Train calls.", registry=r)
        self.divergences = Counter("jitnet_train_divergences", "Train calls stopped because "
                                   "the loss or the weights became non-finite.", registry=r)
        self.commit_seconds = Histogram("jitnet_commit_seconds", "Seconds to make a new model "
                                        "version durable (temp file, fsync, rename, directory "
                                        "fsync); _count is the number of commits.",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.lease_conflicts = Counter("jitnet_lease_conflicts", "Calls refused (ABORTED) "
                                       "because another call was changing the model.",
                                       registry=r)
        self.store_errors = Counter("jitnet_store_errors", "Store failures: disk_full and write "
                                    "(a write or delete failed; the previous version is kept), "
                                    "unreadable (a stored model could not be read).",
                                    ["kind"], registry=r)
        for kind in STORE_FAILURES:
            self.store_errors.labels(kind)  # every kind present from the start, at 0
        self.warmup_seconds = Gauge("jitnet_warmup_seconds", "Seconds the start-up took to "
                                    "compile the kernels or load them from numba's cache.",
                                    registry=r)
        self._http = None

    def method(self, kind: str, full_method: str,
               rows_of: Callable[[object], int] | None) -> MethodMetrics:
        """The one MethodMetrics of a method (a method may be wrapped more than once)."""
        service, _, name = full_method.lstrip("/").rpartition("/")
        with self._methods_lock:
            found = self._methods.get(full_method)
            if found is None:
                found = self._methods[full_method] = MethodMetrics(kind, service, name, rows_of)
            return found

    def methods(self) -> list[MethodMetrics]:
        with self._methods_lock:
            return list(self._methods.values())

    # -- the HTTP endpoint ---------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Starts /metrics on its own thread; returns the port (`port` 0: a free one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_address[1]

    def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            http.shutdown()
            http.server_close()


class _GrpcCollector:
    """The per-method families, summed over threads at scrape time."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def collect(self):
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.",
            labels=GRPC_LABELS)
        handled = CounterMetricFamily(
            "grpc_server_handled", "Total number of RPCs completed on the server, regardless "
            "of success or failure.", labels=(*GRPC_LABELS, "grpc_code"))
        received = CounterMetricFamily(
            "grpc_server_msg_received", "Total number of RPC stream messages received on the "
            "server.", labels=GRPC_LABELS)
        sent = CounterMetricFamily(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.",
            labels=GRPC_LABELS)
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC "
            "that had been application-level handled by the server.", labels=GRPC_LABELS)
        rows = HistogramMetricFamily(
            "jitnet_request_rows", "Rows of the inputs tensor of each call that succeeded "
            "(Predict: rows predicted; Train: rows of the training set).", labels=GRPC_LABELS)
        for method in self._metrics.methods():
            labels = list(method.labels)
            total = method.total()
            started.add_metric(labels, total.started)
            received.add_metric(labels, total.received)
            sent.add_metric(labels, total.sent)
            for code, count in zip(CODES, total.codes, strict=True):
                handled.add_metric([*labels, GO_CODE_NAMES[code]], count)
            seconds.add_metric(labels, _cumulative(SECONDS_BUCKETS, total.seconds),
                               total.seconds_sum)
            if method.rows_of is not None:
                rows.add_metric(labels, _cumulative(ROWS_BUCKETS, total.rows), total.rows_sum)
        return [started, handled, received, sent, seconds, rows]


class _StoreCollector:
    """Models stored, read from the store at scrape time."""

    def __init__(self, store: ModelStore):
        self._store = store

    def collect(self):
        family = GaugeMetricFamily("jitnet_models", "Models in the store (readable or not).")
        try:
            family.add_metric([], len(self._store.ids()))
        except OSError:  # no data directory yet (before start-up made it): no sample
            pass
        return [family]


def _cumulative(bounds, counts) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip((*[_le(b) for b in bounds], "+Inf"), counts, strict=True):
        running += count
        out.append((bound, running))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))
