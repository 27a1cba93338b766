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

from jitnet.service.file_store import _HEADER, FORMAT_VERSION, MAGIC
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.stored import C, TIMEOUT, temp_files
from tests.support.rpc import SERVING, XOR_X, XOR_Y, error_of, health_status, tensor, wait_for


def _file(meta: dict | bytes, params: int, *, count: int | None = None,
          version: int = FORMAT_VERSION, magic: bytes = MAGIC, good_digest: bool = True) -> bytes:
    """A model file built by hand: header, metadata, parameters, momentum, sha256."""
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    text += b" " * (-len(text) % 8)
    body = (_HEADER.pack(magic, version, len(text), params if count is None else count) + text
            + struct.pack(f"<{2 * params}d", *([0.5] * (2 * params))))
    digest = hashlib.sha256(body).digest()
    return body + (digest if good_digest else bytes(32))


def _meta(model_id: str, sizes=(2, 1)) -> dict:
    return {"id": model_id, "architecture": {
        "layer_sizes": list(sizes), "hidden_activation": "SIGMOID",
        "output_activation": "SIGMOID", "loss": "MSE", "bias": True, "gradient_mode": "EXACT"},
        "version": 4, "epochs_trained": 0, "iterations": 0, "last_loss": 0.0,
        "create_time_ns": 1, "update_time_ns": 2}


def _calls(stub, model_id):
    return {
        "GetModel": lambda: stub.GetModel(pb.GetModelRequest(model_id=model_id),
                                          timeout=TIMEOUT),
        "Predict": lambda: stub.Predict(pb.PredictRequest(model_id=model_id,
                                                          inputs=tensor(XOR_X)), timeout=TIMEOUT),
        "Step": lambda: stub.Step(pb.StepRequest(model_id=model_id, input=[0, 1], target=[1],
                                                 learning_rate=0.1), timeout=TIMEOUT),
        "Train": lambda: stub.Train(pb.TrainRequest(
            model_id=model_id, inputs=tensor(XOR_X), targets=tensor(XOR_Y), epochs=1,
            learning_rate=0.1), timeout=TIMEOUT),
    }


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
    assert stub.Predict(pb.PredictRequest(model_id="good", inputs=tensor(XOR_X)),
                        timeout=TIMEOUT).model_version == 1
    for model_id, (_, words) in broken.items():
        for rpc, call in _calls(stub, model_id).items():
            exc = error_of(call)
            assert exc.code() == C.FAILED_PRECONDITION, (model_id, rpc, exc.code(),
                                                          exc.details())
            for word in [f"'{model_id}'", "unreadable", *words]:
                assert word in exc.details(), (model_id, rpc, word, exc.details())
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
    list(stub.Train(pb.TrainRequest(model_id="m", inputs=tensor(XOR_X), targets=tensor(XOR_Y),
                                    epochs=10, learning_rate=0.5), timeout=TIMEOUT))
    served = stub.Predict(pb.PredictRequest(model_id="m", inputs=tensor(XOR_X, raw=True)),
                          timeout=TIMEOUT)
    assert served.model_version == 2
    backup = tmp_path / "m.backup"
    shutil.copy(data / "m.jitnet", backup)
    # another process (or a disk fault) leaves a broken file in place
    (data / "m.jitnet").write_bytes(b"JITNETM\0garbage")
    time.sleep(0.2)  # past the refresh interval: the next call reads the file again
    again = stub.Predict(pb.PredictRequest(model_id="m", inputs=tensor(XOR_X, raw=True)),
                         timeout=TIMEOUT)
    assert (again.model_version, again.outputs.raw) == (2, served.outputs.raw)
    wait_for(lambda: "cannot be used" in server.log, 5, what="the broken file logged")
    assert stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model.version == 2
    # changing it needs a readable file
    exc = error_of(_calls(stub, "m")["Train"])
    assert exc.code() == C.FAILED_PRECONDITION and "unreadable" in exc.details()
    # restored from the backup: it trains again
    shutil.copy(backup, data / "m.jitnet")
    wait_for(lambda: _trains(stub), 5, what="the restored file used")
    assert health_status(server.channel) == SERVING


def _trains(stub) -> bool:
    try:
        return list(_calls(stub, "m")["Train"]())[-1].model_version == 3
    except Exception:  # noqa: BLE001 - still FAILED_PRECONDITION until the refresh
        return False
