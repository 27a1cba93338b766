"""Bounded soak: concurrent Train, Step, Predict and reads on several models from several
threads through one subprocess server, for JITNET_SOAK_SECONDS (default 10; CI sets 20).

- No deadlock: every call has a deadline, every thread finishes within the run + 60 s.
- No failed call but the expected ABORTED (a Step or Train on a model another call trains).
- Resident memory (VmRSS of the server process) grows by less than RSS_BOUND between the
  first quarter of the run (everything warmed up) and its end.
- An untouched model's predictions are bit-identical before, during and after, and its
  stored weights and version never change.
"""

from __future__ import annotations

import collections
import os
import random
import statistics
import threading
import time

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import SERVING, TIMEOUT, C, health_status, tensor
from tests.support.stored import SUMMARY, rss_bytes, weight_bytes, weights

SECONDS = float(os.environ.get("JITNET_SOAK_SECONDS", "10"))
RSS_BOUND = 24 * 2**20  # bytes of growth allowed after the first quarter of the run
TRAINED = ["t0", "t1", "t2"]
STEPPED = ["s0"]
UNTOUCHED = "u"


def _models(stub) -> None:
    for model_id in TRAINED:
        stub.CreateModel(pb.CreateModelRequest(model_id=model_id, architecture=pb.Architecture(
            layer_sizes=[4, 24, 2], hidden_activation=pb.ACTIVATION_TANH), seed=1),
            timeout=TIMEOUT)
    stub.CreateModel(pb.CreateModelRequest(model_id="s0", architecture=pb.Architecture(
        layer_sizes=[4, 8, 2]), seed=2), timeout=TIMEOUT)
    stub.CreateModel(pb.CreateModelRequest(model_id=UNTOUCHED, architecture=pb.Architecture(
        layer_sizes=[4, 32, 2], output_activation=pb.ACTIVATION_SOFTMAX,
        loss=pb.LOSS_CROSS_ENTROPY), seed=3), timeout=TIMEOUT)


class Load:
    def __init__(self, stub, until: float):
        self.stub, self.until = stub, until
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def record(self, what: str, code: grpc.StatusCode, details: str = "") -> None:
        with self.lock:
            self.counts[(what, code.name)] += 1
            if code not in (C.OK, C.ABORTED):
                self.failures.append(f"{what}: {code.name} {details}")

    def run(self, what: str, call) -> None:
        try:
            result = call()
            if what == "Train":
                replies = list(result)
                assert replies[-1].done
            self.record(what, C.OK)
        except grpc.RpcError as exc:
            self.record(what, exc.code(), exc.details())

    def trainer(self, seed: int) -> None:
        rng = random.Random(seed)
        data = np.random.default_rng(seed)
        while time.monotonic() < self.until:
            rows = rng.choice([8, 64, 256])
            x = data.random((rows, 4))
            y = np.stack([np.sin(x.sum(axis=1)), np.cos(x[:, 0])], axis=1) * 0.5 + 0.5
            request = pb.TrainRequest(
                model_id=rng.choice(TRAINED), inputs=tensor(x, raw=rng.random() < 0.7),
                targets=tensor(y, raw=True), epochs=rng.randint(5, 200),
                learning_rate=rng.choice([0.01, 0.1, 0.5]), batch_size=rng.choice([1, 8, 32]),
                momentum=rng.choice([0.0, 0.9]), shuffle=rng.random() < 0.5,
                seed=rng.randint(0, 99), report_every=rng.choice([0, 5, 50]))
            self.run("Train", lambda request=request: self.stub.Train(request, timeout=30))

    def stepper(self, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.until:
            request = pb.StepRequest(
                model_id=rng.choice(STEPPED * 4 + TRAINED), input=[rng.random() for _ in range(4)],
                target=[rng.random(), rng.random()], learning_rate=0.1,
                dry_run=rng.random() < 0.2)
            self.run("Step", lambda request=request: self.stub.Step(request, timeout=TIMEOUT))

    def predictor(self, seed: int) -> None:
        rng = random.Random(seed)
        data = np.random.default_rng(seed)
        while time.monotonic() < self.until:
            request = pb.PredictRequest(
                model_id=rng.choice(TRAINED + STEPPED + [UNTOUCHED]),
                inputs=tensor(data.random((rng.choice([1, 7, 300]), 4)),
                              raw=rng.random() < 0.7))
            self.run("Predict",
                     lambda request=request: self.stub.Predict(request, timeout=TIMEOUT))

    def reader(self, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.until:
            if rng.random() < 0.5:
                self.run("GetModel", lambda: self.stub.GetModel(pb.GetModelRequest(
                    model_id=rng.choice(TRAINED + STEPPED + [UNTOUCHED]),
                    include_weights=True, raw=rng.random() < 0.5), timeout=TIMEOUT))
            else:
                self.run("ListModels", lambda: self.stub.ListModels(
                    pb.ListModelsRequest(page_size=2), timeout=TIMEOUT))
            time.sleep(0.01)


@pytest.mark.soak
@pytest.mark.slow
def test_soak_concurrent_train_step_predict(spawn):
    server = spawn("--threads", "8")
    stub = server.stub
    _models(stub)
    probe = pb.PredictRequest(model_id=UNTOUCHED, inputs=tensor(
        np.random.default_rng(9).random((200, 4)), raw=True))
    expected = stub.Predict(probe, timeout=TIMEOUT).outputs.raw
    untouched = weight_bytes(weights(stub, UNTOUCHED))

    began = time.monotonic()
    load = Load(stub, began + SECONDS)
    threads = [threading.Thread(target=fn, args=(seed,), daemon=True) for seed, fn in
               enumerate([load.trainer, load.trainer, load.stepper, load.predictor,
                          load.predictor, load.reader])]
    samples: list[tuple[float, int]] = []  # (seconds into the run, RSS bytes)
    mid_run_predictions = []
    for thread in threads:
        thread.start()
    while time.monotonic() < began + SECONDS:
        samples.append((time.monotonic() - began, rss_bytes(server.proc.pid)))
        if len(samples) % 8 == 0:
            mid_run_predictions.append(stub.Predict(probe, timeout=TIMEOUT).outputs.raw)
        time.sleep(0.125)
    for thread in threads:  # no deadlock: every call ends by its deadline
        thread.join(timeout=max(0.0, began + SECONDS + 60 - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "a load thread is stuck"
    samples.append((time.monotonic() - began, rss_bytes(server.proc.pid)))

    assert not load.failures, load.failures[:10]
    totals = collections.Counter()
    for (what, _code), n in load.counts.items():
        totals[what] += n
    assert all(totals[what] >= 5 for what in ("Train", "Step", "Predict", "GetModel")), totals
    assert load.counts[("Train", "OK")] >= 3 and load.counts[("Step", "OK")] >= 5
    # the untouched model: bit-identical predictions, same weights and version
    assert all(p == expected for p in mid_run_predictions)
    assert stub.Predict(probe, timeout=TIMEOUT).outputs.raw == expected
    after = weights(stub, UNTOUCHED)
    assert after.version == 1 and weight_bytes(after) == untouched
    assert health_status(server.channel) == SERVING
    # memory: warmed up after the first quarter; growth from there to the end is bounded
    warm = [rss for t, rss in samples if SECONDS * 0.2 <= t <= SECONDS * 0.35]
    end = [rss for t, rss in samples if t >= SECONDS * 0.85]
    growth = statistics.median(end) - statistics.median(warm)
    aborted = sum(n for (what, code), n in load.counts.items() if code == "ABORTED")
    SUMMARY["soak"] = (f"{sum(totals.values())} calls in {SECONDS:g} s ({dict(totals)}), "
                       f"{aborted} ABORTED, no other failure; server RSS "
                       f"{statistics.median(warm) / 2**20:.0f} -> "
                       f"{statistics.median(end) / 2**20:.0f} MiB "
                       f"(peak {max(r for _, r in samples) / 2**20:.0f} MiB), "
                       f"growth bound {RSS_BOUND / 2**20:.0f} MiB")
    print("\nsoak:", SUMMARY["soak"])
    assert growth < RSS_BOUND, SUMMARY["soak"]
