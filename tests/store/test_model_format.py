"""The stored form of a version (service/store/model_format.py): every field back exactly, for
each optimizer's state; version-1 bodies (before turn 3) still read; damaged headers refused."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from jitnet.service.engine.model import Activation, Architecture, Init, Loss, initial_parameters
from jitnet.service.engine.optimizers import NO_STATE, Optimizer, OptimizerState
from jitnet.service.store import ModelRecord, model_format

ARCH = Architecture((3, 4, 2), hidden_activation=Activation.RELU,
                    output_activation=Activation.SOFTMAX, loss=Loss.CROSS_ENTROPY)


def _record(state: OptimizerState, metadata=None) -> ModelRecord:
    first = ModelRecord.first_version("m", ARCH, initial_parameters(ARCH, Init.HE, 1), metadata)
    return first.next_version(first.params * 3, state, last_loss=0.125, epochs_trained=5,
                              iterations=20)


STATES = {
    "none": NO_STATE,
    "sgd": OptimizerState.sgd(np.linspace(-1, 1, ARCH.n_params), steps=3),
    "adam": OptimizerState(Optimizer.ADAM, (np.linspace(0, 1, ARCH.n_params),
                                            np.linspace(1, 2, ARCH.n_params)), steps=11),
    "adamw": OptimizerState(Optimizer.ADAMW, (np.full(ARCH.n_params, -0.5),
                                              np.full(ARCH.n_params, 0.25)), steps=1),
}


@pytest.mark.parametrize("name", sorted(STATES))
def test_every_field_comes_back_exactly(name):
    record = _record(STATES[name], {"classes": "[3, 5]", "é": "ü"})
    read = model_format.decode(model_format.encode(record), "m")
    for field in ("id", "arch", "version", "epochs_trained", "iterations", "last_loss",
                  "create_time_ns", "update_time_ns"):
        assert getattr(read, field) == getattr(record, field), field
    assert read.params.tobytes() == record.params.tobytes()
    assert (read.optimizer.optimizer, read.optimizer.steps) == (
        record.optimizer.optimizer, record.optimizer.steps)
    assert [a.tobytes() for a in read.optimizer.arrays] == [
        a.tobytes() for a in record.optimizer.arrays]
    assert dict(read.metadata) == {"classes": "[3, 5]", "é": "ü"}
    body = model_format.encode(record)
    assert struct.unpack("<I", body[8:12])[0] == model_format.FORMAT_VERSION == 2
    # the size is the header's arithmetic: header, metadata, (1 + state arrays) x params x 8
    meta_len = struct.unpack("<I", body[12:16])[0]
    assert len(body) == (model_format.HEADER.size + meta_len
                         + (1 + len(record.optimizer.arrays)) * 8 * ARCH.n_params + 32)


def _version_1(record: ModelRecord, velocity: np.ndarray) -> bytes:
    """A body as servers wrote it before turn 3 (format version 1), built from its layout."""
    arch = record.arch
    meta = json.dumps({
        "id": record.id, "version": record.version, "epochs_trained": record.epochs_trained,
        "iterations": record.iterations, "last_loss": record.last_loss,
        "create_time_ns": record.create_time_ns, "update_time_ns": record.update_time_ns,
        "architecture": {"layer_sizes": list(arch.layer_sizes),
                         "hidden_activation": arch.hidden_activation.name,
                         "output_activation": arch.output_activation.name,
                         "loss": arch.loss.name, "bias": arch.bias,
                         "gradient_mode": arch.gradient_mode.name}}).encode()
    meta += b" " * (-len(meta) % 8)
    body = (struct.pack("<8sIIQ", b"JITNETM\x00", 1, len(meta), arch.n_params) + meta
            + record.params.astype("<f8").tobytes() + velocity.astype("<f8").tobytes())
    return body + hashlib.sha256(body).digest()


def test_a_version_1_body_reads_as_sgd_with_its_velocity():
    record = _record(NO_STATE)
    velocity = np.linspace(-3, 3, ARCH.n_params)
    read = model_format.decode(_version_1(record, velocity), "m")
    assert read.arch == ARCH and read.version == record.version
    assert read.params.tobytes() == record.params.tobytes()
    assert read.optimizer.optimizer is Optimizer.SGD and read.optimizer.steps == 0
    assert read.velocity.tobytes() == velocity.tobytes()
    assert dict(read.metadata) == {}
    again = model_format.decode(model_format.encode(read), "m")  # rewritten as version 2
    assert again.velocity.tobytes() == velocity.tobytes()


@pytest.mark.parametrize("at, value, words", [
    (24, 16, "item size 16"),  # neither float64 nor float32
    (28, 3, "3 optimizer state arrays"),
])
def test_a_header_no_optimizer_or_dtype_can_have_is_refused(at, value, words):
    body = bytearray(model_format.encode(_record(STATES["adam"])))
    body[at:at + 4] = struct.pack("<I", value)
    with pytest.raises(model_format.Unreadable, match=words):
        model_format.decode(bytes(body), "m")
