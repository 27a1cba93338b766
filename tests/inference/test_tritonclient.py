"""tritonclient[grpc], sync and aio, against a real jitnet server: every RPC of the protocol,
FP64 and FP32 inference of one row and many, outputs equal to jitnet.v1 Predict's bit for bit,
and every error case with the status the client sees.

The client runs in a subprocess (tritonclient_cases.py): its generated `inference` messages
and jitnet's cannot share one process's descriptor pool."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, create, tensor

CASES = pathlib.Path(__file__).with_name("tritonclient_cases.py")
MAX_ROWS = 200
MODEL = "digits"
CLIENTS = ("sync", "aio")


@pytest.fixture(scope="module")
def seen(tmp_path_factory, warmed):
    """What both clients saw, run once for the module: a ready server with a 64-64-10 model,
    and one that never gets ready."""
    import grpc

    from jitnet.service.config import Config, Limits
    from jitnet.service.server.lifecycle import create_server
    from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

    tmp = tmp_path_factory.mktemp("triton")
    never = threading.Event()
    handles = []

    def start(name, warm_up, ready):
        config = Config(host="127.0.0.1", port=0, data_dir=str(tmp / name),
                        limits=Limits(max_rows=MAX_ROWS))
        handle = create_server(config, warm_up=warm_up).start()
        handles.append(handle)
        if ready:
            assert handle.wait_ready(30)
        return handle

    try:
        ready = start("ready", lambda: None, True)
        unready = start("unready", never.wait, False)
        x = load_digits().data / 16.0
        rows = {"one": x[:1], "many": x[1:151]}
        with grpc.insecure_channel(f"127.0.0.1:{ready.port}") as channel:
            stub = pb_grpc.NetworkServiceStub(channel)
            create(stub, MODEL, sizes=(64, 64, 10), seed=3,
                   output_activation=pb.ACTIVATION_SOFTMAX, loss=pb.LOSS_CROSS_ENTROPY)

            def predict(data):
                reply = stub.Predict(pb.PredictRequest(model_id=MODEL,
                                                       inputs=tensor(data, raw=True)),
                                     timeout=TIMEOUT)
                return np.frombuffer(reply.outputs.raw, "<f8").reshape(list(reply.outputs.shape))

            expected = {}
            for label, data in rows.items():
                expected[("FP64", label)] = predict(data)
                # FP32 in: the server predicts on the float32 values as float64, answers FP32.
                expected[("FP32", label)] = predict(
                    data.astype(np.float32).astype(np.float64)).astype(np.float32)
        cases = {"target": f"127.0.0.1:{ready.port}",
                 "unready_target": f"127.0.0.1:{unready.port}", "model": MODEL,
                 "rows": {k: v.tolist() for k, v in rows.items()},
                 "too_many_rows": MAX_ROWS + 1}
        path = tmp / "cases.json"
        path.write_text(json.dumps(cases))
        out = subprocess.run([sys.executable, str(CASES), str(path)], capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-4000:]
        yield json.loads(out.stdout), expected
    finally:
        never.set()
        for handle in handles:
            handle.drain(0).wait(10)


def _ok(results, name):
    entry = results[name]
    assert "ok" in entry, f"{name}: {entry}"
    return entry["ok"]


def _status(results, name):
    entry = results[name]
    assert "error" in entry, f"{name} answered: {entry}"
    return entry["error"]["status"], entry["error"]["message"]


@pytest.mark.parametrize("client", CLIENTS)
def test_live_ready_and_model_ready(seen, client):
    results = seen[0][client]
    assert _ok(results, "live") is True
    assert _ok(results, "ready") is True
    assert _ok(results, "model_ready") is True
    assert _ok(results, "model_ready_version") is True
    assert _ok(results, "model_ready_unknown") is False  # OK with ready false, no exception
    assert _ok(results, "unready_live") is True
    assert _ok(results, "unready_ready") is False


@pytest.mark.parametrize("client", CLIENTS)
def test_metadata(seen, client):
    results = seen[0][client]
    server = _ok(results, "server_metadata")
    assert server["name"] == "jitnet" and server["version"]
    assert server.get("extensions", []) == []
    model = _ok(results, "model_metadata")
    assert model["name"] == MODEL and model["versions"] == ["1"]
    assert model["platform"] == "jitnet"
    assert model["inputs"] == [{"name": "input", "datatype": "FP64", "shape": ["-1", "64"]}]
    assert model["outputs"] == [{"name": "output", "datatype": "FP64", "shape": ["-1", "10"]}]
    assert _status(results, "model_metadata_unknown")[0] == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("label", ["one", "many"])
def test_infer_equals_predict_bit_for_bit(seen, client, datatype, label):
    results, expected = seen
    out = _ok(results[client], f"infer_{datatype}_{label}")
    want = expected[(datatype, label)]
    assert out["datatype"] == datatype  # FP32 in, FP32 out
    assert out["shape"] == list(want.shape)
    assert out["dtype"] == str(want.dtype)
    assert bytes.fromhex(out["hex"]) == want.tobytes()
    assert out["id"] == f"req-{label}-{datatype}"  # the request id, echoed
    assert out["version"] == "1"


@pytest.mark.parametrize("client", CLIENTS)
def test_asking_for_the_output_and_the_current_version(seen, client):
    results, expected = seen
    out = _ok(results[client], "infer_asks_output")
    assert bytes.fromhex(out["hex"]) == expected[("FP64", "one")].tobytes()


ERRORS = {  # case -> (status, words the message must contain)
    "error_datatype": ("INVALID_ARGUMENT", ["inputs[0].datatype", "INT32"]),
    "error_width": ("INVALID_ARGUMENT", ["63 columns", "64"]),
    "error_rank": ("INVALID_ARGUMENT", ["inputs[0].shape", "[1, 1, 64]"]),
    "error_two_inputs": ("INVALID_ARGUMENT", ["inputs has 2 tensors"]),
    "error_both_forms": ("INVALID_ARGUMENT", ["both raw_input_contents and inputs[0].contents"]),
    "error_no_data": ("INVALID_ARGUMENT", ["fp64_contents has 0 numbers"]),
    "error_input_name": ("INVALID_ARGUMENT", ["inputs[0].name", "input-0"]),
    "error_output_name": ("INVALID_ARGUMENT", ["outputs", "probabilities"]),
    "error_not_finite": ("INVALID_ARGUMENT", ["finite"]),
    "error_unknown_model": ("NOT_FOUND", ["no-such-model"]),
    "error_unknown_version": ("NOT_FOUND", ["version 99"]),
    "error_rows_limit": ("RESOURCE_EXHAUSTED", [f"{MAX_ROWS + 1} rows", "max_rows"]),
    "unready_infer": ("UNAVAILABLE", ["starting"]),
    "triton_model_config": ("UNIMPLEMENTED", []),
    "triton_statistics": ("UNIMPLEMENTED", []),
    "triton_repository": ("UNIMPLEMENTED", []),
    "triton_load": ("UNIMPLEMENTED", []),
    "triton_shared_memory": ("UNIMPLEMENTED", []),
    "triton_trace": ("UNIMPLEMENTED", []),
    "stream": ("UNIMPLEMENTED", []),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_as_the_client_sees_them(seen, client, case):
    status, words = ERRORS[case]
    code, message = _status(seen[0][client], case)
    assert code == f"StatusCode.{status}", (case, code, message)
    for word in words:
        assert word in message, (case, message)
