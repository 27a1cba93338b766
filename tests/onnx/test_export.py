"""Export: a served model as an ONNX file, equal to Predict through ONNX Runtime and onnx's
reference evaluator; jitnet -> ONNX -> jitnet keeps the weights bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jitnet.client import onnx as jitnet_onnx

from .conftest import onnx, run_onnxruntime

# Predict and ONNX Runtime both compute each layer as a float64 dot product of at most 64
# terms of size ~|x|*|w| <= ~10, each rounding at 2^-53 relative: a few hundred ulps of 10 at
# worst, ~1e-13, then activations with slopes <= 1. 1e-12 is the bound and holds.
TOLERANCE = 1e-12


def _layers(sizes, bias, seed):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(b, a)), rng.normal(size=b) if bias else None)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


CASES = [  # (layer sizes, hidden, output): every activation, 1 to 4 layers
    ((64, 10), "sigmoid", "softmax"),
    ((64, 16, 10), "relu", "softmax"),
    ((64, 8, 8, 3), "tanh", "sigmoid"),
    ((64, 12, 7, 5, 2), "linear", "linear"),
    ((64, 6, 1), "sigmoid", "sigmoid"),
    ((64, 9, 9, 9, 4), "relu", "linear"),
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("sizes,hidden,output", CASES,
                         ids=[f"{len(c[0]) - 1}x-{c[1]}-{c[2]}" for c in CASES])
def test_export_equals_predict(client, model_id, rows, sizes, hidden, output, bias):
    loss = "cross_entropy" if output == "softmax" else "mse"
    model = client.create_model(list(sizes), hidden=hidden, output=output, loss=loss, bias=bias,
                                layers=_layers(sizes, bias, len(sizes)), model_id=model_id)
    data = client.export_onnx(model_id)
    expected = client.predict(model_id, rows)
    got = run_onnxruntime(data, rows)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)

    from onnx.reference import ReferenceEvaluator

    reference = ReferenceEvaluator(onnx.load_model_from_string(data)).run(None, {"input": rows})
    np.testing.assert_allclose(reference[0], expected, rtol=0, atol=TOLERANCE)

    proto = onnx.load_model_from_string(data)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gemm") == len(sizes) - 1
    assert all(len(n.input) == (3 if bias else 2) for n in proto.graph.node if n.op_type == "Gemm")
    assert all(a.i == 1 for n in proto.graph.node if n.op_type == "Gemm"
               for a in n.attribute if a.name == "transB")
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[jitnet_onnx.META_ARCHITECTURE])["layer_sizes"] == list(sizes)
    assert props[jitnet_onnx.META_MODEL_ID] == model_id
    assert props[jitnet_onnx.META_VERSION] == str(model.version)


def test_file_is_what_older_runtimes_load(client, model_id, tmp_path):
    """IR 8, opset 17 set explicitly; a symbolic batch; DOUBLE; weights inside; passes the
    full checker and strict shape inference."""
    client.create_model([64, 5, 10], hidden="relu", output="softmax", loss="cross_entropy",
                        model_id=model_id)
    path = tmp_path / "m.onnx"
    data = client.export_onnx(model_id, path)
    assert path.read_bytes() == data
    proto = onnx.load_model(str(path))
    assert proto.ir_version == jitnet_onnx.IR_VERSION == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("input", "output")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 64
    assert out.type.tensor_type.shape.dim[1].dim_value == 10
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    assert [(a.name, a.i) for a in softmax.attribute] == [("axis", 1)]


@pytest.mark.parametrize("sizes,hidden,output,loss,bias,mode", [
    ((64, 10), "sigmoid", "softmax", "cross_entropy", True, "exact"),
    ((3, 7, 2), "tanh", "sigmoid", "mse", False, "exact"),
    ((2, 4, 1), "sigmoid", "sigmoid", "mse", False, "article"),
    ((5, 6, 6, 6, 1), "relu", "linear", "mse", True, "exact"),
])
def test_round_trip_keeps_weights_and_architecture(client, model_id, sizes, hidden, output,
                                                   loss, bias, mode):
    original = client.create_model(list(sizes), hidden=hidden, output=output, loss=loss,
                                   bias=bias, gradient_mode=mode, seed=3, model_id=model_id,
                                   metadata={"owner": "tests"})
    data = client.export_onnx(model_id)
    back = client.import_onnx(data, model_id + "-back")
    assert (back.layer_sizes, back.hidden_activation, back.output_activation, back.loss,
            back.bias, back.gradient_mode) == (tuple(sizes), hidden, output, loss, bias, mode)
    assert back.metadata["owner"] == "tests" and back.metadata["source"].startswith("onnx: jitnet")
    for (w, b), (w2, b2) in zip(original.layers, back.layers, strict=True):
        assert np.array_equal(w, w2)
        assert (b is None and b2 is None) or np.array_equal(b, b2)


def test_model_without_weights_is_refused_before_any_file(client, model_id):
    client.create_model([2, 3, 1], model_id=model_id)
    with pytest.raises(ValueError, match="include_weights=True"):
        jitnet_onnx.to_onnx(client.get_model(model_id))


def test_without_onnx_the_message_says_what_to_install(monkeypatch, client, model_id):
    import sys

    from jitnet.client.draw import MissingDependency

    client.create_model([2, 3, 1], model_id=model_id)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'jitnet\[onnx\]'"):
        client.export_onnx(model_id)
    with pytest.raises(MissingDependency, match="onnx"):
        client.import_onnx(b"", model_id + "-x")
