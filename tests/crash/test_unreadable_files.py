"""Model files that cannot be loaded, at start-up and while serving. The server stays live and
SERVING, the other models serve, and each broken model answers FAILED_PRECONDITION with the
reason (never INTERNAL, never a crash); a broken rewrite of a model that was read keeps its
last good version serving (TF Serving's availability-preserving rule); crash leftovers are
removed; a broken model can still be deleted."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import time

import pytest

from jitnet.service.store.file import FORMAT_VERSION, HEADER_V1, MAGIC
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    SERVING,
    TIMEOUT,
    C,
    expect_error,
    health_status,
    model_calls,
    unless,
    xor_predict,
    xor_train,
)
from tests.support.stored import temp_files
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def _file(meta: dict | bytes, params: int, *, count: int | None = None,
          version: int = 1, magic: bytes = MAGIC, good_digest: bool = True) -> bytes:
    """A model file of format version 1 built by hand (header, metadata, parameters, momentum,
    sha256): what servers wrote before turn 3, and still read."""
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    text += b" " * (-len(text) % 8)
    body = (HEADER_V1.pack(magic, version, len(text), params if count is None else count) + text
            + struct.pack(f"<{2 * params}d", *([0.5] * (2 * params))))
    digest = hashlib.sha256(body).digest()
    return body + (digest if good_digest else bytes(32))


def _meta(model_id: str, sizes=(2, 1)) -> dict:
    return {"id": model_id, "architecture": {
        "layer_sizes": list(sizes), "hidden_activation": "SIGMOID",
        "output_activation": "SIGMOID", "loss": "MSE", "bias": True, "gradient_mode": "EXACT"},
        "version": 4, "epochs_trained": 0, "iterations": 0, "last_loss": 0.0,
        "create_time_ns": 1, "update_time_ns": 2}


def test_unreadable_files_at_start_up_fail_alone(spawn, tmp_path):
    data = tmp_path / "data"
    first = spawn(data_dir=data)
    first.stub.CreateModel(pb.CreateModelRequest(model_id="good", architecture=pb.Architecture(
        layer_sizes=[2, 1])), timeout=TIMEOUT)
    first.close()
    good = (data / "good.jitnet").read_bytes()
    flipped = bytearray(_file(_meta("flipped"), 3))
    flipped[-40] ^= 0x01  # one bit of the momentum state
    broken = {
        # id: (file bytes, words of the reason)
        "flipped": (bytes(flipped), ["checksum"]),
        "truncated": (_file(_meta("truncated"), 3)[:-20], ["truncated"]),
        "empty": (b"", ["truncated", "0 bytes"]),
        "future": (_file(_meta("future"), 3, version=FORMAT_VERSION + 1),
                   [f"format version {FORMAT_VERSION + 1}"]),
        "text": (b"this is not a model\n" * 5, ["magic"]),
        "schema": (_file(b'{"nonsense": true}', 3), ["bad metadata"]),
        "enum": (_file({**_meta("enum"), "architecture": {**_meta("enum")["architecture"],
                                                          "loss": "HINGE"}}, 3),
                 ["bad metadata"]),
        "misnamed": (_file(_meta("someone-else"), 3), ["holds model 'someone-else'"]),
        "count": (_file(_meta("count", sizes=(2, 4, 1)), 3), ["3 parameters stored"]),
        # a header claiming 2^60 parameters: refused from the file size, nothing allocated
        "huge": (_file(_meta("huge"), 3, count=2**60), ["its header says"]),
        "digest": (_file(_meta("digest"), 3, good_digest=False), ["checksum"]),
    }
    for model_id, (raw, _) in broken.items():
        (data / f"{model_id}.jitnet").write_bytes(raw)
    (data / ".tmp-good-999-abcd").write_bytes(good[:50])  # a crash's leftover
    (data / "not a model id!.jitnet").write_bytes(good)  # not a valid id: ignored

    server = spawn(data_dir=data)
    stub = server.stub
    assert health_status(server.channel) == SERVING
    assert stub.Predict(xor_predict("good"), timeout=TIMEOUT).model_version == 1
    for model_id, (_, words) in broken.items():
        for call in model_calls(stub, model_id).values():
            expect_error(C.FAILED_PRECONDITION, call, f"'{model_id}'", "unreadable", *words)
    listed = [m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models]
    assert listed == ["good"]
    assert not temp_files(data)
    assert all(f"'{model_id}'" in server.log for model_id in broken)  # each one logged
    assert "Traceback" not in server.log
    # a broken model can be deleted, and its id used again
    stub.DeleteModel(pb.DeleteModelRequest(model_id="flipped"), timeout=TIMEOUT)
    assert stub.CreateModel(pb.CreateModelRequest(model_id="flipped", architecture=pb.Architecture(
        layer_sizes=[2, 1])), timeout=TIMEOUT).model.version == 1
    assert health_status(server.channel) == SERVING


def test_a_broken_rewrite_keeps_the_last_good_version_serving(spawn, tmp_path):
    data = tmp_path / "data"
    server = spawn("--refresh-seconds", "0.05", data_dir=data)
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(model_id="m", architecture=pb.Architecture(
        layer_sizes=[2, 3, 1]), seed=1), timeout=TIMEOUT)
    list(stub.Train(xor_train("m", 10), timeout=TIMEOUT))
    served = stub.Predict(xor_predict("m", raw=True), timeout=TIMEOUT)
    assert served.model_version == 2
    backup = tmp_path / "m.backup"
    shutil.copy(data / "m.jitnet", backup)
    # another process (or a disk fault) leaves a broken file in place
    (data / "m.jitnet").write_bytes(b"JITNETM\0garbage")
    time.sleep(0.2)  # past the refresh interval: the next call reads the file again
    again = stub.Predict(xor_predict("m", raw=True), timeout=TIMEOUT)
    assert (again.model_version, again.outputs.raw) == (2, served.outputs.raw)
    wait_for(lambda: "cannot be used" in server.log, 5, what="the broken file logged")
    assert stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model.version == 2
    # changing it needs a readable file
    train = model_calls(stub, "m")["Train"]
    expect_error(C.FAILED_PRECONDITION, train, "unreadable")
    # restored from the backup: it trains again (FAILED_PRECONDITION until the refresh)
    shutil.copy(backup, data / "m.jitnet")
    trained = wait_for(lambda: unless(train, C.FAILED_PRECONDITION), 5,
                       what="the restored file used")
    assert trained[-1].model_version == 3
    assert health_status(server.channel) == SERVING
