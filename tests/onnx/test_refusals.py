"""Graphs jitnet does not serve are refused before any call, with a message naming the node
(or tensor) and what to do; mutated graphs never crash the importer."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from jitnet.client import onnx as jitnet_onnx
from jitnet.client.errors import InvalidArgument, UnsupportedModel

from .conftest import onnx

D = TensorProto.DOUBLE


def _model(nodes, initializers, inputs=None, outputs=None, elem=D):
    inputs = inputs or [helper.make_tensor_value_info("x", elem, ["n", 3])]
    outputs = outputs or [helper.make_tensor_value_info("y", elem, ["n", 2])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _w(shape, name, dtype=np.float64):
    return numpy_helper.from_array(np.arange(np.prod(shape), dtype=dtype).reshape(shape) / 10,
                                   name)


def _two_layers(hidden_op="Relu", output_op="Softmax", **softmax):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node(hidden_op, ["h"], ["a"], name="act1"),
             helper.make_node("Gemm", ["a", "w2"], ["z"], name="fc2", transB=1),
             helper.make_node(output_op, ["z"], ["y"], name="out", **softmax)]
    return _model(nodes, [_w((4, 3), "w1"), _w((4,), "b1"), _w((2, 4), "w2")])


def test_a_valid_graph_reads():
    spec = jitnet_onnx.from_onnx(_two_layers(axis=1))
    assert spec.layer_sizes == (3, 4, 2) and spec.hidden_activation == "relu"
    assert spec.output_activation == "softmax" and spec.loss == "cross_entropy"


def test_gemm_alpha_beta_and_trans_are_folded():
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # B [fan_in 3, fan_out 2], transB=0
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="g", alpha=0.5, beta=2.0)]
    spec = jitnet_onnx.from_onnx(_model(nodes, [numpy_helper.from_array(w, "w"),
                                                numpy_helper.from_array(np.array([1.0, -1.0]),
                                                                        "c")]))
    (W, b), = spec.layers
    assert np.array_equal(W, 0.5 * w.T) and np.array_equal(b, [2.0, -2.0])


def _refused(model, *patterns):
    with pytest.raises(UnsupportedModel) as caught:
        jitnet_onnx.from_onnx(model)
    assert isinstance(caught.value, InvalidArgument)  # exit code 2, INVALID_ARGUMENT's class
    for pattern in patterns:
        assert pattern in str(caught.value), str(caught.value)
    return str(caught.value)


def test_other_ops_are_refused_naming_the_node():
    model = _two_layers(hidden_op="LeakyRelu")
    _refused(model, "node 'act1' (LeakyRelu)", "re-export the network without the LeakyRelu")


def test_mixed_hidden_activations():
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Gemm", ["a1", "w2"], ["h2"], name="fc2", transB=1),
             helper.make_node("Tanh", ["h2"], ["a2"], name="tanh2"),
             helper.make_node("Gemm", ["a2", "w3"], ["y"], name="fc3", transB=1)]
    model = _model(nodes, [_w((4, 3), "w1"), _w((4, 4), "w2"), _w((2, 4), "w3")])
    _refused(model, "node 'tanh2' (Tanh)", "uses tanh, the layers before it relu",
             "share one activation")


def test_softmax_only_last():
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
             helper.make_node("Softmax", ["h"], ["a"], name="soft", axis=1),
             helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2", transB=1)]
    model = _model(nodes, [_w((4, 3), "w1"), _w((2, 4), "w2")])
    _refused(model, "node 'fc2' (Gemm) comes after node 'soft' (Softmax)", "Softmax only last")


def test_softmax_over_another_axis():
    _refused(_two_layers(axis=0), "node 'out' (Softmax) has axis 0", "axis 1 or -1")


def test_float16():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1)]
    model = _model(nodes, [_w((2, 3), "w", np.float16)],
                   inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 3])],
                   outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 2])])
    _refused(model, "input 'x' is float16", "net.float() or net.double()")


def test_several_inputs_and_outputs():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1),
             helper.make_node("Sigmoid", ["y"], ["y2"], name="s")]
    two_in = _model(nodes[:1], [_w((2, 3), "w")], inputs=[
        helper.make_tensor_value_info("x", D, ["n", 3]),
        helper.make_tensor_value_info("extra", D, ["n", 3])])
    _refused(two_in, "2 inputs ('x', 'extra')", "concatenated into one")
    two_out = _model(nodes, [_w((2, 3), "w")], outputs=[
        helper.make_tensor_value_info("y", D, ["n", 2]),
        helper.make_tensor_value_info("y2", D, ["n", 2])])
    _refused(two_out, "2 outputs ('y', 'y2')", "output='NAME'")
    # Naming one picks it.
    assert jitnet_onnx.from_onnx(two_out, output="y2").output_activation == "sigmoid"


def test_input_rank_other_than_two():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1)]
    model = _model(nodes, [_w((2, 3), "w")],
                   inputs=[helper.make_tensor_value_info("x", D, ["n", 1, 3])])
    _refused(model, "input 'x' has rank 3", "flatten the input")


def test_external_data(tmp_path):
    model = _two_layers(axis=1)
    path = tmp_path / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.onnx.data", size_threshold=0)
    _refused(str(path), "external data file ('net.onnx.data')", "re-export with the weights "
             "inside")


def test_cast_to_another_type_and_not_onnx():
    nodes = [helper.make_node("Cast", ["x"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["c", "w"], ["y"], name="g", transB=1)]
    _refused(_model(nodes, [_w((2, 3), "w")]), "node 'cast' (Cast) casts to another type")
    _refused(b"certainly not protobuf \xff\xff", "not an ONNX model")
    _refused(12, "a path, bytes or an onnx.ModelProto")


def test_refused_import_sends_nothing(client, model_id):
    with pytest.raises(UnsupportedModel):
        client.import_onnx(_two_layers(hidden_op="Elu"), model_id)
    from jitnet.client.errors import NotFound

    with pytest.raises(NotFound):
        client.get_model(model_id)


def _mutations(model, rng):
    """Copies of `model` with one random change each: an op renamed, an input rewired, an
    attribute dropped or changed, a tensor's dims or bytes altered, a node removed or
    duplicated."""
    ops = ["Gemm", "MatMul", "Add", "Relu", "Softmax", "Identity", "Cast", "Flatten",
           "Reshape", "Concat", "Sub", "ZipMap", "Conv", ""]
    for _ in range(300):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        choice = rng.integers(9)
        node = g.node[rng.integers(len(g.node))] if len(g.node) else None
        names = [n for nd in g.node for n in list(nd.input) + list(nd.output)] + ["x", "zz", ""]
        if choice == 0 and node is not None:
            node.op_type = ops[rng.integers(len(ops))]
        elif choice == 1 and node is not None and len(node.input):
            node.input[rng.integers(len(node.input))] = names[rng.integers(len(names))]
        elif choice == 2 and node is not None and len(node.attribute):
            del node.attribute[rng.integers(len(node.attribute))]
        elif choice == 3 and node is not None:
            node.attribute.append(helper.make_attribute(
                ["axis", "transB", "transA", "alpha", "to"][rng.integers(5)],
                int(rng.integers(-3, 20))))
        elif choice == 4 and len(g.initializer):
            t = g.initializer[rng.integers(len(g.initializer))]
            if len(t.dims):
                t.dims[rng.integers(len(t.dims))] = int(rng.integers(0, 6))
        elif choice == 5 and len(g.initializer):
            t = g.initializer[rng.integers(len(g.initializer))]
            t.data_type = int(rng.integers(0, 17))
        elif choice == 6 and node is not None:
            g.node.remove(node)
        elif choice == 7 and node is not None:
            g.node.append(node)
        elif choice == 8:
            g.input[0].type.tensor_type.elem_type = int(rng.integers(0, 17))
        yield m


def test_fuzz_of_mutated_graphs_never_crashes():
    """Every outcome is a spec or an UnsupportedModel: nothing else escapes the importer."""
    from tests.support.stored import SUMMARY

    rng = np.random.default_rng(23)
    accepted = refused = 0
    for base in (_two_layers(axis=1), _two_layers(hidden_op="Tanh", output_op="Sigmoid")):
        for mutated in _mutations(base, rng):
            data = mutated.SerializeToString()
            try:
                spec = jitnet_onnx.from_onnx(data)
            except UnsupportedModel as e:
                assert str(e)
                refused += 1
            else:
                assert len(spec.layers) == len(spec.layer_sizes) - 1
                accepted += 1
    assert refused > 100 and accepted > 10  # the mutations reached both sides
    SUMMARY["onnx import fuzz (accepted/refused)"] = f"{accepted}/{refused}"
