"""Compile every kernel specialisation the server uses, so no call pays for the JIT.

    python -m jitnet.service.server.warmup      # at image build time: fills the numba cache, exit 0

`warm_up()` is what server start runs before reporting SERVING; with a warm cache it loads the
compiled code from disk in well under a second or two.

Numba compiles one specialisation per argument *type* (dtype, ndim, layout, read-only flag), so
warm-up makes the servicers' own calls with the very array types they pass: a store record
(read-only parameters) through the prediction entry (protocols/prediction.py) and
the one-sample fast paths (protocols/fastpath.py, both protocols), the Open Inference Protocol's
decoding (protocols/inference/convert.py, FP64 and FP32, raw and typed), `record.network.step`,
`.check_gradients` and `training.train`; tensors decoded by protocols/jitnet_v1/convert.py
(whichever wire form; Predict's as read-only views); the repeated fields of Step and CheckGradients;
Train with and without shuffling and momentum, batch 1 and a batch big enough for the BLAS paths,
with Adam and AdamW, sample weights and validation rows;
Predict with row counts going up and down. Nothing here touches disk.
tests/server/test_warmup.py checks that no call compiles anything after it.

These are the generic (tier-0) kernels. An architecture's own kernels (tier 1, engine/jit/) are not
compiled here: the server compiles them per architecture in a process of its own, after start.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.v1 import jitnet_pb2 as pb

from ..config import Limits
from ..engine import training
from ..engine.model import Activation, Architecture, GradientMode, Init, initial_parameters
from ..engine.optimizers import Optimizer
from ..protocols import fastpath, prediction
from ..protocols.inference import convert as inference_convert
from ..protocols.jitnet_v1 import convert
from ..store import ModelRecord

_LOGGER = logging.getLogger(__name__)

_LIMITS = Limits()
# Two shapes: a tiny network (plain loops) and one wide enough for the BLAS paths.
_SHAPES = ((2, 3, 1), (64, 64, 10))


def _record(arch: Architecture) -> ModelRecord:
    """A record as the store hands them out: read-only parameters."""
    params = initial_parameters(arch, Init.XAVIER, 0)
    params.setflags(write=False)
    return ModelRecord("warm-up", arch, 1, 0, 0, 0.0, 0, 0, params)


def _decoded(array: np.ndarray, raw: bool, read_only: bool = False) -> np.ndarray:
    """Through the wire form and back, as the servicer receives a tensor (Predict: read-only)."""
    return convert.to_array(convert.from_array(array, raw), "inputs", read_only=read_only)


def _predict(record: ModelRecord, inputs: np.ndarray, raw: bool) -> None:
    """Predict as the servicer runs it: the fast path first, then the prediction entry."""
    request = pb.PredictRequest(model_id=record.id, inputs=convert.from_array(inputs, raw))
    if fastpath.predict_reply(lambda _: record, request, _LIMITS.max_message_bytes) is None:
        prediction.predict(lambda _id, _min: record, _LIMITS, record.id, inputs.shape[0],
                           lambda: _decoded(inputs, raw, read_only=True))
    for datatype, wire in (("FP64", "<f8"), ("FP32", "<f4")):
        _infer(record, inputs, datatype, wire, raw)


def _infer(record: ModelRecord, inputs: np.ndarray, datatype: str, wire: str, raw: bool) -> None:
    """ModelInfer as its servicer runs it: the fast path first, then the prediction entry."""
    tensor = oip.ModelInferRequest.InferInputTensor(name=inference_convert.INPUT,
                                                    datatype=datatype, shape=inputs.shape)
    request = oip.ModelInferRequest(model_name=record.id, inputs=[tensor])
    if raw:
        request.raw_input_contents.append(inputs.astype(wire).tobytes())
    else:
        getattr(request.inputs[0].contents, inference_convert.CONTENTS[datatype]).extend(
            inputs.ravel().tolist())
    if fastpath.infer_reply(lambda _: record, request, _LIMITS.max_message_bytes) is None:
        inp = inference_convert.infer_input(request)
        prediction.predict(lambda _id, _min: record, _LIMITS, record.id, inp.rows,
                           lambda: inference_convert.decode(inp))


def _exercise(sizes, bias: bool, mode: GradientMode, output: Activation,
              rng: np.random.Generator) -> None:
    arch = Architecture(sizes, output_activation=output, bias=bias, gradient_mode=mode)
    record = _record(arch)
    n_in, n_out = sizes[0], sizes[-1]
    for rows in (1, 300, 1, 7, 0):  # row counts going up and down
        for raw in (True, False):
            _predict(record, rng.random((rows, n_in)), raw)
    record.network.step(convert.vector(rng.random(n_in).tolist()),
                        convert.vector(rng.random(n_out).tolist()), 0.1)
    record.network.check_gradients(convert.vector(rng.random(n_in).tolist()),
                                   convert.vector(rng.random(n_out).tolist()))
    x = _decoded(rng.random((40, n_in)), True)
    t = _decoded(rng.random((40, n_out)), True)
    for batch, shuffle, momentum in ((1, False, 0.0), (32, True, 0.9), (0, True, 0.0),
                                     (32, False, 0.5)):
        options = training.TrainOptions(epochs=2, learning_rate=0.01, batch_size=batch,
                                        momentum=momentum, shuffle=shuffle, seed=1)
        for _ in training.train(record.network, x, t, options, state=record.optimizer):
            pass
    # The batch path's other optimizers, sample weights and validation (one epoch at a time,
    # evaluate_rows), as a Train decodes them.
    weights = convert.vector(rng.random(40).tolist())
    for batch, optimizer in ((1, Optimizer.ADAM), (32, Optimizer.ADAMW)):
        options = training.TrainOptions(epochs=2, learning_rate=0.01, batch_size=batch,
                                        optimizer=optimizer, weight_decay=0.01,
                                        validation_fraction=0.25, shuffle=True, seed=1)
        for _ in training.train(record.network, x, t, options, state=record.optimizer,
                                sample_weights=weights):
            pass


def warm_up(strict: bool = False) -> float:
    """Runs predict, step and train once per argument type the server uses; returns seconds.

    A failure is logged with its traceback and the rest still warms up: a server with one
    broken code path should still serve the others (that path answers INTERNAL). With
    `strict`, a failure raises RuntimeError at the end instead (the build-time command)."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    failures = []
    for sizes in _SHAPES:
        for bias, mode, output in ((True, GradientMode.EXACT, Activation.SIGMOID),
                                   (False, GradientMode.ARTICLE, Activation.SOFTMAX)):
            try:
                _exercise(sizes, bias, mode, output, rng)
            except Exception as exc:  # noqa: BLE001 - reported, then the others go on
                failures.append(f"{sizes} bias={bias}: {type(exc).__name__}")
                _LOGGER.error("warm-up of a %s network failed", sizes, exc_info=exc)
    took = time.perf_counter() - start
    if failures:
        _LOGGER.error("warm-up finished in %.2f s with %d failure(s): %s", took, len(failures),
                      "; ".join(failures))
        if strict:
            raise RuntimeError(f"warm-up failed: {'; '.join(failures)}")
    else:
        _LOGGER.info("kernels ready in %.2f s (compiled or loaded from the numba cache)", took)
    return took


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        took = warm_up(strict=True)
    except RuntimeError as exc:
        print(f"jitnet warm-up: {exc}", file=sys.stderr)
        return 1
    print(f"jitnet kernels compiled into the numba cache in {took:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
