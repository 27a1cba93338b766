"""Tiers inside a server: specialising never holds a call, the fast path moves to tier 1 when
it is swapped in, and a restart serves stored models' architectures from the cache at once."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jitnet.service.engine import jit
from jitnet.service.engine.jit import SpecialisedKernels
from jitnet.service.engine.model import Architecture
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, XOR_X, XOR_Y, array, create, tensor

NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
pytestmark = pytest.mark.skipif(NOJIT, reason="NUMBA_DISABLE_JIT: nothing to compile")


@pytest.fixture
def specialising(make_server):
    """make_server with the kernel room on (the test harness turns it off by default)."""
    def make(kernel_dir, **settings):
        return make_server(kernel_dir=str(kernel_dir), specialised_kernels=8, **settings)
    yield make
    jit.room.wait_idle(120)
    jit.room.configure(jit.Mode.OFF)


def predict(stub, model_id, rows):
    reply = stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=True)),
                         timeout=TIMEOUT)
    return array(reply.outputs)


def train(stub, model_id, epochs=20):
    return list(stub.Train(pb.TrainRequest(model_id=model_id, inputs=tensor(XOR_X, raw=True),
                                           targets=tensor(XOR_Y, raw=True), epochs=epochs,
                                           learning_rate=0.5), timeout=TIMEOUT))


def test_the_first_train_specialises_in_the_background(specialising, tmp_path, monkeypatch):
    bound = []
    original = SpecialisedKernels.bind_predict_sample

    def recording(self, *args):
        bound.append(self.arch)
        return original(self, *args)
    monkeypatch.setattr(SpecialisedKernels, "bind_predict_sample", recording)

    server = specialising(tmp_path / "kernels")  # an empty kernel directory: compiles
    stub = server.stub
    arch = Architecture((2, 3, 1))
    create(stub, "m", sizes=(2, 3, 1))
    before = predict(stub, "m", XOR_X[1:2])
    assert not jit.room.is_specialised(arch) and jit.room.wait_idle(0)  # Predicts: not yet
    progress = train(stub, "m")
    # The Train was answered at tier 0 while its architecture compiles elsewhere: no call
    # waits for it.
    assert progress[-1].done and not jit.room.is_specialised(arch)
    trained = predict(stub, "m", XOR_X)
    one = predict(stub, "m", XOR_X[2:3])
    assert jit.room.wait_idle(600) and jit.room.failures() == {}
    assert jit.room.is_specialised(arch) and jit.room.compiles == 1
    # The fast path rebinds to tier 1 and answers the same, to rounding.
    np.testing.assert_allclose(predict(stub, "m", XOR_X[2:3]), one, rtol=1e-13)
    assert bound == [arch]
    np.testing.assert_allclose(predict(stub, "m", XOR_X), trained, rtol=1e-13)
    assert not np.allclose(before, trained[1:2])  # the training did something


def test_a_restart_serves_stored_architectures_from_the_cache(specialising, tmp_path):
    kernels = tmp_path / "kernels"
    first = specialising(kernels, data_dir=str(tmp_path / "data"))
    create(first.stub, "m", sizes=(2, 5, 1))
    train(first.stub, "m", epochs=2)
    assert jit.room.wait_idle(600) and jit.room.compiles == 1
    first.close()

    # A new server on the same models: the architecture is loaded before SERVING, nothing is
    # compiled again (once per architecture per machine).
    second = specialising(kernels, data_dir=str(tmp_path / "data"))
    assert jit.room.is_specialised(Architecture((2, 5, 1)))
    assert jit.room.loads == 1 and jit.room.compiles == 0 and jit.room.wait_idle(0)
    assert predict(second.stub, "m", XOR_X).shape == (4, 1)
