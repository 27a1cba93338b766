"""What a server stored and did: file fingerprints, temp files, exact weights, timings, memory,
and the figures reported at the end of the run."""

from __future__ import annotations

import hashlib
import os
import time

import grpc
import numpy as np

from jitnet.v1 import jitnet_pb2 as pb

from .rpc import TIMEOUT, C  # noqa: F401 - importable from here too, as they used to be

# Figures the tests report at the end of the run (conftest.pytest_terminal_summary).
SUMMARY: dict[str, str] = {}


def fingerprint(data_dir) -> dict[str, str]:
    """What is stored: model file name -> sha256 of its bytes (version, counters, weights,
    momentum state and all). Temp files and locks are not models and are left out."""
    out = {}
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(".jitnet") and not name.startswith("."):
            try:
                with open(os.path.join(data_dir, name), "rb") as f:
                    out[name] = hashlib.sha256(f.read()).hexdigest()
            except FileNotFoundError:  # deleted between listdir and open
                continue
    return out


def temp_files(data_dir) -> list[str]:
    return [n for n in os.listdir(data_dir) if n.startswith(".tmp-")]


def weights(stub, model_id: str) -> pb.Model:
    """The model with its weights as raw bytes: exact, comparable byte for byte."""
    return stub.GetModel(pb.GetModelRequest(model_id=model_id, include_weights=True, raw=True),
                         timeout=TIMEOUT).model


def weight_bytes(model: pb.Model) -> bytes:
    """Every layer's weights and biases, in order, as little-endian float64 bytes, whichever
    form the message used."""
    parts = []
    for layer in model.layers:
        for tensor in (layer.weights, layer.biases):
            if tensor.raw:
                parts.append(tensor.raw)
            elif tensor.values:
                parts.append(np.asarray(tensor.values, dtype="<f8").tobytes())
    return b"".join(parts)


def all_finite(model: pb.Model) -> bool:
    return bool(np.isfinite(np.frombuffer(weight_bytes(model), dtype="<f8")).all())


def explicit_layers(model: pb.Model) -> list[pb.Layer]:
    """A model's weights as CreateModelRequest.layers (raw, exact)."""
    return [pb.Layer(weights=layer.weights,
                     **({"biases": layer.biases} if layer.HasField("biases") else {}))
            for layer in model.layers]


def timed(call):
    """(result or grpc.RpcError, seconds) of call()."""
    began = time.perf_counter()
    try:
        result = call()
    except grpc.RpcError as exc:
        result = exc
    return result, time.perf_counter() - began


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
