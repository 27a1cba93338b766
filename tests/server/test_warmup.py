"""Warm-up compiles exactly what serving needs: afterwards no call compiles anything."""

from __future__ import annotations

import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from jitnet.service.engine import kernels
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, create, long_train_request, tensor, xor_train


def _specialisations() -> dict[str, int]:
    return {name: len(obj.signatures) for name, obj in vars(kernels).items()
            if isinstance(obj, CPUDispatcher)}


def test_no_call_after_warm_up_compiles_a_kernel(make_server):
    server = make_server()  # after the session's warm-up
    stub = server.stub
    before = _specialisations()
    assert sum(before.values()), "warm-up compiled nothing?"
    create(stub, "small", sizes=(2, 3, 1))
    create(stub, "wide", sizes=(64, 64, 10), bias=False)
    rng = np.random.default_rng(0)

    def traffic(model_id, n_in):
        for rows, raw in ((7, True), (300, False), (1, True), (2, False)):
            stub.Predict(pb.PredictRequest(model_id=model_id,
                                           inputs=tensor(rng.random((rows, n_in)), raw)),
                         timeout=TIMEOUT)
        stub.Step(pb.StepRequest(model_id=model_id, input=rng.random(n_in).tolist(),
                                 target=[0.5] * (1 if n_in == 2 else 10), learning_rate=0.1,
                                 dry_run=n_in == 2), timeout=TIMEOUT)

    traffic("small", 2)
    traffic("wide", 64)
    threads = [threading.Thread(target=traffic, args=("small", 2)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    list(stub.Train(xor_train("small", 5, 0.1, raw=True), timeout=TIMEOUT))
    list(stub.Train(long_train_request("small", epochs=3, batch_size=32, shuffle=True,
                                       momentum=0.9), timeout=TIMEOUT))
    list(stub.Train(xor_train("small", 2, 0.1, batch_size=4), timeout=TIMEOUT))
    assert _specialisations() == before


@pytest.mark.slow
def test_warmup_command_exits_0():
    done = subprocess.run([sys.executable, "-m", "jitnet.service.server.warmup"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kernels ready in" in done.stderr and numba.__version__
