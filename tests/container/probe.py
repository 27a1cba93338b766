"""A client that runs INSIDE a container on the compose network (`docker run -i ... jitnet python -
MODE ...`, this file on stdin); it is not imported by the tests. It prints one JSON object on its
last line (and `ready` first, in load mode).

    identify TARGET MODEL CALLS REPLICA...   Predict CALLS times through TARGET (nginx), noting
                                             which replica answered (nginx's x-jitnet-upstream
                                             header), after every REPLICA (host:port, called
                                             directly) serves the model's current version
    load TARGET MODEL SECONDS THREADS        Predict in THREADS threads with jitnet.client.Client
                                             (its retry policy, as an application has it)
    snapshot TARGET MODEL                    the model's version and its outputs on XOR's inputs
"""

from __future__ import annotations

import json
import sys
import threading
import time

import grpc
import numpy as np

from jitnet.client import Client
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
TIMEOUT = 10.0


def _hex(array: np.ndarray) -> str:
    """Bit-exact text of float64 outputs."""
    return np.ascontiguousarray(array, dtype="<f8").tobytes().hex()


def _tensor(array: np.ndarray, raw: bool) -> pb.Tensor:
    """Either wire form of a float64 tensor (protos/jitnet/v1/jitnet.proto)."""
    if raw:
        return pb.Tensor(shape=array.shape, raw=np.ascontiguousarray(array, "<f8").tobytes())
    return pb.Tensor(shape=array.shape, values=array.ravel().tolist())


def _array(tensor: pb.Tensor) -> np.ndarray:
    if tensor.raw:
        return np.frombuffer(tensor.raw, "<f8").reshape(tuple(tensor.shape))
    return np.asarray(tensor.values, "<f8").reshape(tuple(tensor.shape))


def identify(target: str, model: str, calls: int, replicas: list[str]) -> dict:
    # A replica re-reads a model another one committed within its refresh interval (0.5 s):
    # wait until each, called directly, serves the same version.
    direct: dict[str, int] = {}
    deadline = time.monotonic() + 15.0
    while True:
        for address in replicas:
            with Client(address, timeout=TIMEOUT) as client:
                direct[address] = client.get_model(model).version
        if len(set(direct.values())) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    results = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.NetworkServiceStub(channel)
        for i in range(calls):
            raw = i % 2 == 0  # both wire forms
            request = pb.PredictRequest(model_id=model, inputs=_tensor(XOR_X, raw))
            reply, call = stub.Predict.with_call(request, timeout=TIMEOUT)
            headers = dict(call.initial_metadata())
            results.append({"upstream": headers.get("x-jitnet-upstream", ""),
                            "version": reply.model_version,
                            "outputs": _hex(_array(reply.outputs))})
    return {"direct": direct, "calls": results}


def load(target: str, model: str, seconds: float, threads: int) -> dict:
    began = time.monotonic()
    ok_by_second: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(threads + 1)

    def worker() -> None:
        with Client(target, timeout=TIMEOUT) as client:
            client.predict(model, XOR_X)  # connected before `ready`
            started.wait()
            while time.monotonic() - began < seconds:
                try:
                    client.predict(model, XOR_X)
                    second = int(time.monotonic() - began)
                    with lock:
                        ok_by_second[second] = ok_by_second.get(second, 0) + 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        errors.append(
                            f"{time.monotonic() - began:.2f}s {type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    started.wait(30)
    print("ready", flush=True)
    for thread in pool:
        thread.join(seconds + 2 * TIMEOUT)
    return {"ok": sum(ok_by_second.values()), "failed": len(errors), "errors": errors[:10],
            "ok_by_second": [ok_by_second.get(s, 0) for s in range(int(seconds) + 1)]}


def snapshot(target: str, model: str) -> dict:
    with Client(target, timeout=TIMEOUT) as client:
        outputs, version = client.predict(model, XOR_X, with_version=True)
        return {"version": version, "stored_version": client.get_model(model).version,
                "outputs": _hex(outputs)}


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "identify":
        result = identify(args[0], args[1], int(args[2]), args[3:])
    elif mode == "load":
        result = load(args[0], args[1], float(args[2]), int(args[3]))
    elif mode == "snapshot":
        result = snapshot(args[0], args[1])
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
