"""What every ONNX test needs: onnx, onnxruntime on one thread, inputs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run_onnxruntime(data: bytes, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """The file's output on x through ONNX Runtime's CPU provider, one thread, at the default
    optimisation level (its fusions are what a server would run: onnxruntime#6320)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    names = None if output is None else [output]
    return session.run(names, {name: x})[0]


@pytest.fixture
def rows():
    return np.random.default_rng(7).normal(size=(9, 64)) * 2.0
