"""Runs tritonclient (its sync and its aio gRPC client) against a jitnet server and prints what
it saw as JSON: the answers of every RPC, the outputs' bytes, and each error case's status.

A subprocess of tests/inference/test_tritonclient.py, never imported by it: tritonclient's
generated `inference` messages and jitnet's register the same names in protobuf's descriptor
pool, so they cannot meet in one process. It imports nothing of jitnet, and asserts nothing:
the test judges.

    python tests/inference/tritonclient_cases.py CASES.json
CASES.json: {"target", "unready_target", "model", "rows": {name: [[...], ...]}, "too_many_rows"}
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as sync_grpc
import tritonclient.grpc.aio as aio_grpc
from tritonclient.utils import InferenceServerException

TIMEOUT = 20.0


def _inputs(rows: np.ndarray, datatype: str, name: str = "input"):
    tensor = sync_grpc.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    return [tensor]


def _both_forms(rows: np.ndarray):
    """Raw bytes and typed contents at once: tritonclient's API never sends that, so the
    typed values go into the tensor message it sends (InferInput._get_tensor())."""
    inputs = _inputs(rows, "FP64")
    inputs[0]._get_tensor().contents.fp64_contents.extend(rows.ravel().tolist())
    return inputs


def _no_data(rows: np.ndarray):
    """An input with no raw buffer and no contents (no data set on it)."""
    return [sync_grpc.InferInput("input", list(rows.shape), "FP64")]


def _output(result) -> dict:
    array = result.as_numpy("output")
    return {"datatype": result.get_output("output").datatype, "shape": list(array.shape),
            "dtype": str(array.dtype), "hex": array.tobytes().hex(), "id": result.get_response().id,
            "version": result.get_response().model_version}


def _error(exc: InferenceServerException) -> dict:
    return {"status": exc.status(), "message": exc.message()}


def plan(cases: dict):
    """(name, method, kwargs) of every call; the same list for both clients."""
    model = cases["model"]
    rows = {k: np.asarray(v, dtype=np.float64) for k, v in cases["rows"].items()}
    one, many = rows["one"], rows["many"]
    width = one.shape[1]
    calls = [
        ("live", "is_server_live", {}),
        ("ready", "is_server_ready", {}),
        ("model_ready", "is_model_ready", {"model_name": model}),
        ("model_ready_version", "is_model_ready", {"model_name": model, "model_version": "1"}),
        ("model_ready_unknown", "is_model_ready", {"model_name": "no-such-model"}),
        ("server_metadata", "get_server_metadata", {}),
        ("model_metadata", "get_model_metadata", {"model_name": model}),
        ("model_metadata_unknown", "get_model_metadata", {"model_name": "no-such-model"}),
    ]
    for label, data in (("one", one), ("many", many)):
        for datatype, dtype in (("FP64", np.float64), ("FP32", np.float32)):
            calls.append((f"infer_{datatype}_{label}", "infer", dict(
                model_name=model, inputs=_inputs(data.astype(dtype), datatype),
                request_id=f"req-{label}-{datatype}")))
    calls += [
        ("infer_asks_output", "infer", dict(
            model_name=model, inputs=_inputs(one, "FP64"), model_version="1",
            outputs=[sync_grpc.InferRequestedOutput("output")])),
        ("error_datatype", "infer", dict(
            model_name=model, inputs=_inputs(one.astype(np.int32), "INT32"))),
        ("error_width", "infer", dict(
            model_name=model, inputs=_inputs(one[:, :-1].copy(), "FP64"))),
        ("error_rank", "infer", dict(
            model_name=model, inputs=_inputs(one.reshape(1, 1, width), "FP64"))),
        ("error_two_inputs", "infer", dict(
            model_name=model, inputs=_inputs(one, "FP64") + _inputs(one, "FP64", "input2"))),
        ("error_both_forms", "infer", dict(model_name=model, inputs=_both_forms(one))),
        ("error_no_data", "infer", dict(model_name=model, inputs=_no_data(one))),
        ("error_input_name", "infer", dict(
            model_name=model, inputs=_inputs(one, "FP64", "input-0"))),
        ("error_output_name", "infer", dict(
            model_name=model, inputs=_inputs(one, "FP64"),
            outputs=[sync_grpc.InferRequestedOutput("probabilities")])),
        ("error_not_finite", "infer", dict(
            model_name=model, inputs=_inputs(np.full_like(one, np.nan), "FP64"))),
        ("error_unknown_model", "infer", dict(
            model_name="no-such-model", inputs=_inputs(one, "FP64"))),
        ("error_unknown_version", "infer", dict(
            model_name=model, model_version="99", inputs=_inputs(one, "FP64"))),
        ("error_rows_limit", "infer", dict(
            model_name=model, inputs=_inputs(np.zeros((cases["too_many_rows"], width)),
                                             "FP64"))),
        # Triton-only RPCs: not part of the protocol jitnet serves.
        ("triton_model_config", "get_model_config", {"model_name": model}),
        ("triton_statistics", "get_inference_statistics", {"model_name": model}),
        ("triton_repository", "get_model_repository_index", {}),
        ("triton_load", "load_model", {"model_name": model}),
        ("triton_shared_memory", "get_system_shared_memory_status", {}),
        ("triton_trace", "get_trace_settings", {}),
    ]
    return calls


def _kwargs(kwargs: dict) -> dict:
    # Every call has a deadline: client_timeout in the sync and the aio client alike.
    return {**kwargs, "client_timeout": TIMEOUT}


def _record(results: dict, name: str, method: str, value) -> None:
    if method == "infer":
        results[name] = {"ok": _output(value)}
    elif hasattr(value, "ListFields"):  # a protobuf reply: its fields, by name
        from google.protobuf.json_format import MessageToDict

        results[name] = {"ok": MessageToDict(value, preserving_proto_field_name=True)}
    else:
        results[name] = {"ok": value}


def run_sync(cases: dict) -> dict:
    results: dict = {}
    with sync_grpc.InferenceServerClient(cases["target"]) as client:
        for name, method, kwargs in plan(cases):
            try:
                _record(results, name, method, getattr(client, method)(**_kwargs(kwargs)))
            except InferenceServerException as exc:
                results[name] = {"error": _error(exc)}
        results["stream"] = _sync_stream(client, cases)
    with sync_grpc.InferenceServerClient(cases["unready_target"]) as unready:
        results["unready_ready"] = {"ok": unready.is_server_ready(client_timeout=TIMEOUT)}
        results["unready_live"] = {"ok": unready.is_server_live(client_timeout=TIMEOUT)}
        try:
            unready.infer(cases["model"], _inputs(np.asarray(cases["rows"]["one"]), "FP64"),
                          client_timeout=TIMEOUT)
            results["unready_infer"] = {"ok": "answered"}
        except InferenceServerException as exc:
            results["unready_infer"] = {"error": _error(exc)}
    return results


def _sync_stream(client, cases: dict) -> dict:
    """ModelStreamInfer (Triton's streaming extension): the error reaches the callback."""
    seen = []
    done = __import__("threading").Event()

    def callback(result, error):
        seen.append(error)
        done.set()

    client.start_stream(callback=callback, stream_timeout=TIMEOUT)
    try:
        try:
            client.async_stream_infer(cases["model"], _inputs(np.asarray(cases["rows"]["one"]),
                                                              "FP64"))
        except InferenceServerException:
            pass  # the stream already failed: "the error detail is reported through callback"
        done.wait(TIMEOUT)
    finally:
        client.stop_stream()
    error = next((e for e in seen if e is not None), None)
    return {"error": _error(error)} if error is not None else {"ok": len(seen)}


async def run_aio(cases: dict) -> dict:
    results: dict = {}
    async with aio_grpc.InferenceServerClient(cases["target"]) as client:
        for name, method, kwargs in plan(cases):
            try:
                _record(results, name, method,
                        await getattr(client, method)(**_kwargs(kwargs)))
            except InferenceServerException as exc:
                results[name] = {"error": _error(exc)}
        results["stream"] = await _aio_stream(client, cases)
    async with aio_grpc.InferenceServerClient(cases["unready_target"]) as unready:
        results["unready_ready"] = {"ok": await unready.is_server_ready(client_timeout=TIMEOUT)}
        results["unready_live"] = {"ok": await unready.is_server_live(client_timeout=TIMEOUT)}
        try:
            await unready.infer(cases["model"], _inputs(np.asarray(cases["rows"]["one"]), "FP64"),
                                client_timeout=TIMEOUT)
            results["unready_infer"] = {"ok": "answered"}
        except InferenceServerException as exc:
            results["unready_infer"] = {"error": _error(exc)}
    return results


async def _aio_stream(client, cases: dict) -> dict:
    """ModelStreamInfer through the aio client, which sends no request here: grpc's aio client
    reports a write that races the server's early status as INTERNAL about half the time,
    overwriting the status the server sent (grpc/grpc#36066). The server answers the call
    before any message either way; the sync client (_sync_stream) does send one."""
    async def requests():
        return
        yield  # an async generator with nothing to send

    try:
        async for _result, error in client.stream_infer(requests(), stream_timeout=TIMEOUT):
            if error is not None:
                return {"error": _error(error)}
        return {"ok": "answered"}
    except InferenceServerException as exc:
        return {"error": _error(exc)}
    except grpc.RpcError as exc:  # the aio client lets a stream's own status through as is
        return {"error": {"status": str(exc.code()), "message": exc.details()}}


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        cases = json.load(f)
    out = {"sync": run_sync(cases), "aio": asyncio.run(run_aio(cases))}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
