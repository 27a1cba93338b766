"""ONNX in and out: a jitnet model as an ONNX file, a Triton model repository, and ONNX files
from other libraries (torch.onnx.export, skl2onnx, jitnet itself) as jitnet models.

    from jitnet.client import Client, onnx as jitnet_onnx

    with Client() as client:
        client.export_onnx("digits", "digits.onnx")              # or jitnet_onnx.to_onnx(model)
        jitnet_onnx.write_triton_repository(client.get_model("digits", include_weights=True),
                                            "models/")           # models/digits/1/model.onnx
        client.import_onnx("net.onnx", "imported")               # from_onnx(...) reads only

Export writes one Gemm(transB=1) per layer (jitnet's W [fan_out, fan_in] is Gemm's B as it is;
no C input without biases), then Relu / Sigmoid / Tanh, nothing for linear, Softmax(axis=1) on
a softmax output; input `input` [batch, n_in] with a symbolic batch, output `output`; DOUBLE
for float64 models, FLOAT for float32; the weights inside the file; the architecture, id,
version and metadata in metadata_props. IR 8 and opset 17, set explicitly: onnx 1.23 stamps
IR 14 and opset 28 by default, which the ONNX Runtime inside Triton releases of the last years
(1.23 to 1.27) does not load; IR 8 / opset 17 loads there and in ONNX Runtime 1.32. Every file
passes onnx.checker (full check) and strict shape inference before it is written.

Import reads a chain: Gemm (any transB; alpha and beta folded into W and b) or MatMul + Add per
layer, each followed by Relu, Sigmoid, Tanh or nothing, one hidden activation throughout,
Softmax (axis 1 or -1) only last; Identity, Cast to the same type, Flatten and Reshape that
keep a [batch, width] tensor as it is are passed over. skl2onnx's classifier graphs are
recognised: the probabilities are imported (through ZipMap or not), the label branch
(ArgMax, ArrayFeatureExtractor) is left behind and its classes are kept in the model's
metadata (`classes`, JSON); a binary classifier's [1 - p, p] columns import as its one
sigmoid output p. Anything else raises UnsupportedModel (an InvalidArgument, exit code 2),
naming the node and what to do, before anything reaches the server.

onnx is imported only when one of these runs (`pip install 'jitnet[onnx]'`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping

import numpy as np

from .draw import MissingDependency
from .errors import UnsupportedModel
from .interchange import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, NetworkSpec
from .results import Model

IR_VERSION = 8
OPSET = 17
INPUT = "input"
OUTPUT = "output"
# metadata_props written on export; an import of jitnet's own file reads them back.
META_ARCHITECTURE = "jitnet.architecture"
META_MODEL_ID = "jitnet.model_id"
META_VERSION = "jitnet.model_version"
META_METADATA = "jitnet.metadata"
# Triton: config.pbtxt's max_batch_size (rows per batch a dynamic batcher may form).
DEFAULT_MAX_BATCH_SIZE = 256
_TRITON_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

_ACTIVATION_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}
_OP_ACTIVATIONS = {op: name for name, op in _ACTIVATION_OPS.items()}
_CHAIN_OPS = ("Gemm, or MatMul then Add, per layer, each followed by Relu, Sigmoid, Tanh or "
              "nothing, with Softmax only last")


def onnx_module():
    """The onnx package, or MissingDependency saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency("ONNX export and import need the onnx package: pip install "
                                "'jitnet[onnx]'") from None
    return onnx


# --- export ----------------------------------------------------------------------------------

def _elem_type(onnx, dtype: str) -> int:
    return onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.DOUBLE


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("jitnet")
    except metadata.PackageNotFoundError:
        return "unknown"


def _architecture_json(model: Model) -> str:
    return json.dumps({
        "layer_sizes": list(model.layer_sizes), "hidden_activation": model.hidden_activation,
        "output_activation": model.output_activation, "loss": model.loss, "bias": model.bias,
        "gradient_mode": model.gradient_mode, "dtype": model.dtype}, sort_keys=True)


def to_onnx(model: Model):
    """The model (fetched with its weights: get_model(id, include_weights=True)) as an
    onnx.ModelProto, checked (onnx.checker full check, strict shape inference)."""
    onnx = onnx_module()
    from onnx import helper, numpy_helper

    spec = NetworkSpec.from_model(model)
    elem = _elem_type(onnx, spec.dtype)
    weights_dtype = np.float32 if spec.dtype == "float32" else np.float64
    nodes, initializers = [], []
    current = INPUT
    last = len(spec.layers)
    for k, ((w, b), activation) in enumerate(zip(spec.layers, spec.activations, strict=True),
                                             start=1):
        final = k == last
        inputs = [current, f"layer{k}.weight"]
        initializers.append(numpy_helper.from_array(np.asarray(w, weights_dtype),
                                                    f"layer{k}.weight"))
        if b is not None:
            inputs.append(f"layer{k}.bias")
            initializers.append(numpy_helper.from_array(np.asarray(b, weights_dtype),
                                                        f"layer{k}.bias"))
        net = OUTPUT if final and activation == "linear" else f"layer{k}.net"
        # Gemm: net = input @ W^T + b, W as jitnet keeps it ([fan_out, fan_in]).
        nodes.append(helper.make_node("Gemm", inputs, [net], name=f"layer{k}.gemm", transB=1))
        current = net
        if activation != "linear":
            out = OUTPUT if final else f"layer{k}.output"
            attributes = {"axis": 1} if activation == "softmax" else {}
            nodes.append(helper.make_node(_ACTIVATION_OPS[activation], [net], [out],
                                          name=f"layer{k}.{activation}", **attributes))
            current = out
    n_in, n_out = spec.layer_sizes[0], spec.layer_sizes[-1]
    graph = helper.make_graph(
        nodes, model.id or "jitnet",
        [helper.make_tensor_value_info(INPUT, elem, ["batch", n_in])],
        [helper.make_tensor_value_info(OUTPUT, elem, ["batch", n_out])],
        initializer=initializers,
        doc_string=f"jitnet model '{model.id}' version {model.version}: {model.describe()}")
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="jitnet", producer_version=_package_version())
    proto.ir_version = IR_VERSION
    props = {META_ARCHITECTURE: _architecture_json(model), META_MODEL_ID: model.id,
             META_VERSION: str(model.version)}
    if model.metadata:
        props[META_METADATA] = json.dumps(dict(model.metadata), sort_keys=True)
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return proto


def serialized(model: Model, path=None) -> bytes:
    """to_onnx(model) as the file's bytes, also written to `path` when given."""
    data = to_onnx(model).SerializeToString()
    if path is not None:
        pathlib.Path(path).write_bytes(data)
    return data


def triton_config(model: Model, name: str | None = None, *,
                  max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> str:
    """config.pbtxt (Triton's ModelConfig in protobuf text format) for the exported file:
    platform onnxruntime_onnx, `input` and `output` with their datatype and per-row dims
    (max_batch_size > 0, so the batch dimension is implied), dynamic batching on."""
    name = _triton_name(model, name)
    if int(max_batch_size) < 1:
        raise ValueError(f"max_batch_size is {max_batch_size}; give at least 1")
    datatype = "TYPE_FP32" if model.dtype == "float32" else "TYPE_FP64"
    return "\n".join([
        f"# jitnet model '{model.id}' version {model.version}: {model.describe()}",
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {int(max_batch_size)}",
        "input [",
        "  {",
        f'    name: "{INPUT}"',
        f"    data_type: {datatype}",
        f"    dims: [ {model.layer_sizes[0]} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT}"',
        f"    data_type: {datatype}",
        f"    dims: [ {model.layer_sizes[-1]} ]",
        "  }",
        "]",
        "dynamic_batching { }",
        "",
    ])


def _triton_name(model: Model, name: str | None) -> str:
    name = model.id if name is None else name
    if not _TRITON_NAME.fullmatch(name or ""):
        raise ValueError(f"Triton model name {name!r}: use letters, digits, '_', '-' and '.' "
                         "(not first), as a folder name")
    return name


def write_triton_repository(model: Model, directory, name: str | None = None, *,
                            max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> pathlib.Path:
    """DIRECTORY/NAME/1/model.onnx and DIRECTORY/NAME/config.pbtxt, the model repository
    layout Triton (and KServe's Triton runtime) loads; NAME defaults to the model id. Returns
    DIRECTORY/NAME. An existing version 1 of NAME is replaced."""
    name = _triton_name(model, name)
    config = triton_config(model, name, max_batch_size=max_batch_size)
    data = to_onnx(model).SerializeToString()
    folder = pathlib.Path(directory) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(data)
    (folder / "config.pbtxt").write_text(config, encoding="utf-8")
    return folder


# --- import ----------------------------------------------------------------------------------

def from_onnx(source, *, output: str | None = None, loss: str | None = None,
              dtype: str | None = None) -> NetworkSpec:
    """The network of an ONNX model (a path, the file's bytes or an onnx.ModelProto), ready for
    Client.create_model; UnsupportedModel naming the node for anything jitnet cannot be.

    `output` names the graph output to import when there are several (skl2onnx's classifiers
    need none: their probabilities are found); `loss` (default: what the file's jitnet
    metadata says, else cross_entropy for a softmax or sigmoid output, mse otherwise) and
    `dtype` (default the graph's: DOUBLE float64, FLOAT float32) are what ONNX does not say
    or what to change."""
    onnx = onnx_module()
    proto = _load(onnx, source)
    return _GraphReader(onnx, proto).read(output, loss, dtype)


def _load(onnx, source):
    if isinstance(source, onnx.ModelProto):
        return source
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return onnx.load_model_from_string(bytes(source))
        if isinstance(source, (str, os.PathLike)):
            # External data stays where it is: the reader refuses it with a message.
            return onnx.load_model(os.fspath(source), load_external_data=False)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise UnsupportedModel(f"not an ONNX model: {type(e).__name__}: {e}"[:500]) from None
    raise UnsupportedModel(f"an ONNX model is a path, bytes or an onnx.ModelProto, not "
                           f"{type(source).__name__}")


class _Layer:
    """One layer being read: its affine node(s), W, b, then the activation."""

    def __init__(self, node_label: str, w: np.ndarray, b: np.ndarray | None):
        self.node_label = node_label
        self.w, self.b = w, b
        self.activation: str | None = None
        self.activation_label = node_label
        self.bias_open = b is None  # an Add may still bring the bias


class _GraphReader:
    """Reads one ModelProto. Every failure is an UnsupportedModel: the fuzz in tests/onnx
    feeds this mutated graphs, and nothing else may escape it."""

    def __init__(self, onnx, proto):
        self.onnx = onnx
        self.proto = proto
        self.graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                          OPSET)
        self.constants: dict[str, object] = {}  # tensor name -> TensorProto or attribute
        self.producers: dict[str, tuple[int, object]] = {}

    # -- helpers --

    def label(self, node) -> str:
        index = self.node_index.get(id(node), -1)
        name = node.name or (f"#{index}" if index >= 0 else "?")
        return f"node '{name}' ({node.op_type})"

    def array(self, name: str, what: str) -> np.ndarray:
        """A constant tensor's values; UnsupportedModel when it cannot be read."""
        source = self.constants[name]
        numpy_helper = self.onnx.numpy_helper
        try:
            if isinstance(source, self.onnx.TensorProto):
                self._check_stored_inside(source, name)
                if source.data_type in (self.onnx.TensorProto.FLOAT16,
                                        self.onnx.TensorProto.BFLOAT16):
                    raise UnsupportedModel(self._float16_message(f"{what} '{name}'"))
                return np.asarray(numpy_helper.to_array(source))
            return np.asarray(self.onnx.helper.get_attribute_value(source))
        except UnsupportedModel:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed tensor (wrong length, type)
            raise UnsupportedModel(f"{what} '{name}' cannot be read: {type(e).__name__}: "
                                   f"{e}"[:500]) from None

    def weights(self, name: str, what: str, node_label: str) -> np.ndarray:
        a = self.array(name, what)
        if a.dtype != self.numpy_dtype:
            raise UnsupportedModel(f"{node_label}: {what} '{name}' is {a.dtype}, the graph's "
                                   f"input {self.numpy_dtype}; re-export with one dtype "
                                   "throughout")
        if not np.all(np.isfinite(a)):
            raise UnsupportedModel(f"{node_label}: {what} '{name}' holds NaN or infinite values")
        return a.astype(np.float64)

    def _check_stored_inside(self, tensor, name: str) -> None:
        if tensor.data_location == self.onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise UnsupportedModel(
                f"tensor '{name}' is stored in an external data file ({where!r}); jitnet imports "
                "one self-contained file: re-export with the weights inside (torch: "
                "torch.onnx.export(..., external_data=False); onnx: onnx.save_model(model, "
                "path, save_as_external_data=False) after onnx.load(path))")

    def _float16_message(self, what: str) -> str:
        return (f"{what} is float16; jitnet computes in float64 or float32: convert the model "
                "to float32 or float64 before exporting it (torch: net.float() or net.double())")

    # -- reading --

    def read(self, output: str | None, loss: str | None, dtype: str | None) -> NetworkSpec:
        graph = self.graph
        self.node_index = {id(n): i for i, n in enumerate(graph.node)}
        if len(graph.sparse_initializer):
            raise UnsupportedModel(f"sparse initializer '{graph.sparse_initializer[0].values.name}'"
                                   ": re-export the model with dense weights")
        for tensor in graph.initializer:
            self._check_stored_inside(tensor, tensor.name)
            self.constants[tensor.name] = tensor
        for index, node in enumerate(graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                if len(node.output) != 1 or len(node.attribute) != 1:
                    raise UnsupportedModel(f"{self.label(node)} needs one output and one value")
                value = node.attribute[0]
                if value.type == self.onnx.AttributeProto.TENSOR:
                    self._check_stored_inside(value.t, node.output[0])
                    self.constants[node.output[0]] = value.t
                elif value.name in ("value_float", "value_floats", "value_int", "value_ints"):
                    self.constants[node.output[0]] = value
                else:
                    raise UnsupportedModel(f"{self.label(node)}: its {value.name!r} is not a "
                                           "number tensor")
                continue
            for name in node.output:
                if not name:
                    continue
                if name in self.producers or name in self.constants:
                    raise UnsupportedModel(f"tensor '{name}' is made by two nodes: not a valid "
                                           "ONNX graph")
                self.producers[name] = (index, node)
        source = self._input()
        chosen, classes = self._output(output)
        chain = self._chain(source.name, chosen)
        spec = self._layers(source, chain)
        spec = self._finish(spec, classes, chosen, source.name, loss, dtype)
        return spec

    def _input(self):
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if not inputs:
            raise UnsupportedModel("the graph has no input: nothing feeds the network")
        if len(inputs) > 1:
            names = ", ".join(f"'{i.name}'" for i in inputs)
            raise UnsupportedModel(f"the graph has {len(inputs)} inputs ({names}); a jitnet "
                                   "network takes one [batch, features] tensor: export the "
                                   "network with its inputs concatenated into one")
        source = inputs[0]
        kind = source.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UnsupportedModel(f"input '{source.name}' is a {kind or 'value of no type'}, "
                                   "not a tensor: export the network with a [batch, features] "
                                   "tensor input")
        elem = source.type.tensor_type.elem_type
        T = self.onnx.TensorProto
        if elem in (T.FLOAT16, T.BFLOAT16):
            raise UnsupportedModel(self._float16_message(f"input '{source.name}'"))
        if elem not in (T.DOUBLE, T.FLOAT):
            name = T.DataType.Name(elem) if elem in T.DataType.values() else str(elem)
            raise UnsupportedModel(f"input '{source.name}' is {name}; jitnet takes DOUBLE "
                                   "(float64) or FLOAT (float32) inputs")
        self.elem = elem
        self.numpy_dtype = np.dtype(np.float64 if elem == T.DOUBLE else np.float32)
        self.n_in = None
        if source.type.tensor_type.HasField("shape"):
            dims = source.type.tensor_type.shape.dim
            if len(dims) != 2:
                shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                         for d in dims]
                raise UnsupportedModel(f"input '{source.name}' has rank {len(dims)} (shape "
                                       f"{shown}); jitnet takes [batch, features]: flatten the "
                                       "input before the network when exporting")
            if dims[1].HasField("dim_value") and dims[1].dim_value > 0:
                self.n_in = int(dims[1].dim_value)
        return source

    def _output(self, wanted: str | None):
        """(the tensor to import, the classifier's classes or None)."""
        outputs = list(self.graph.output)
        names = [o.name for o in outputs]
        if not outputs:
            raise UnsupportedModel("the graph has no output")
        labels = {}  # output name -> (probabilities tensor, classes)
        for o in outputs:
            found = self._label_branch(o.name)
            if found is not None:
                labels[o.name] = found
        resolved = {o.name: self._zipmap_source(o.name) for o in outputs}
        classes = next((c for _, c in labels.values() if c is not None), None)
        for name, (tensor, zip_classes) in resolved.items():
            if tensor != name and classes is None:
                classes = zip_classes
        if wanted is not None:
            if wanted not in names:
                raise UnsupportedModel(f"the graph has no output '{wanted}'; its outputs are "
                                       f"{', '.join(repr(n) for n in names)}")
            return resolved[wanted][0], classes
        if len(outputs) == 1:
            return resolved[names[0]][0], classes
        candidates = {resolved[n][0] for n in names if n not in labels}
        sources = {self._strip_identity(p) for p, _ in labels.values()}
        if len(candidates) == 1 and {self._strip_identity(c) for c in candidates} >= sources:
            return candidates.pop(), classes
        raise UnsupportedModel(f"the graph has {len(outputs)} outputs "
                               f"({', '.join(repr(n) for n in names)}); a jitnet network has "
                               "one: name the one to import (output='NAME', or --output NAME)")

    def _producer(self, name: str):
        entry = self.producers.get(name)
        return None if entry is None else entry[1]

    def _strip_identity(self, name: str) -> str:
        for _ in range(64):  # a bound, in case of a cycle of Identities
            node = self._producer(name)
            if node is None or node.op_type != "Identity" or len(node.input) != 1:
                break
            name = node.input[0]
        return name

    def _zipmap_source(self, name: str):
        """(the tensor under a ZipMap, its class labels) or (name, None)."""
        node = self._producer(name)
        if node is None or node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" \
                or len(node.input) != 1:
            return name, None
        labels = None
        for a in node.attribute:
            if a.name in ("classlabels_int64s", "classlabels_strings"):
                labels = self._plain(self.onnx.helper.get_attribute_value(a))
        return node.input[0], labels

    def _label_branch(self, name: str):
        """skl2onnx's label output: [Cast | Identity | Reshape]* <- ArrayFeatureExtractor(
        classes, ArgMax(probabilities)). (the probabilities tensor, the classes) or None."""
        node = self._producer(name)
        for _ in range(8):
            if node is None or node.op_type not in ("Cast", "Identity", "Reshape"):
                break
            node = self._producer(node.input[0]) if len(node.input) else None
        if node is None or node.op_type != "ArrayFeatureExtractor" or len(node.input) != 2:
            return None
        classes_name, index_name = node.input
        argmax = self._producer(index_name)
        if classes_name not in self.constants or argmax is None or argmax.op_type != "ArgMax" \
                or len(argmax.input) != 1:
            return None
        return argmax.input[0], self._plain(self.array(classes_name, "classes"))

    @staticmethod
    def _plain(values) -> list:
        """Class labels as JSON-ready values (bytes decoded)."""
        out = []
        for v in np.asarray(values, dtype=object).ravel().tolist():
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, np.generic):
                v = v.item()
            out.append(v)
        return out

    def _chain(self, source: str, output: str) -> list:
        """The nodes from the input to `output`, input side first: each node on the way takes
        exactly one computed tensor (the others are constants)."""
        chain, name, visited = [], output, set()
        while name != source:
            node = self._producer(name)
            if node is None:
                if name in self.constants:
                    raise UnsupportedModel(f"output '{output}' is a constant; it does not depend "
                                           "on the input")
                raise UnsupportedModel(f"tensor '{name}' is neither the graph's input nor made by "
                                       "any node: not a valid ONNX graph")
            if id(node) in visited:
                raise UnsupportedModel(f"{self.label(node)} is in a cycle: not a valid ONNX graph")
            visited.add(id(node))
            two_columns = self._two_columns(node)
            if two_columns is not None:
                chain.append(("two_columns", node))
                name = two_columns
                continue
            computed = [i for i in node.input if i and i not in self.constants]
            if len(computed) != 1:
                what = (f"combines {len(computed)} computed tensors "
                        f"({', '.join(repr(c) for c in computed)})" if computed
                        else "takes no computed tensor")
                raise UnsupportedModel(f"{self.label(node)} {what}; jitnet imports a chain of "
                                       f"layers: {_CHAIN_OPS}")
            chain.append(("node", node))
            name = computed[0]
        chain.reverse()
        return chain

    def _two_columns(self, node):
        """skl2onnx's binary classifier: Concat([Sub(1, p), p], axis=1) of the sigmoid's p.
        Returns p's name, or None for any other node."""
        if node.op_type != "Concat" or len(node.input) != 2 or node.domain not in ("", "ai.onnx"):
            return None
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        first, p = node.input
        sub = self._producer(first)
        if axis not in (1, -1) or sub is None or sub.op_type != "Sub" or len(sub.input) != 2:
            return None
        one, subtracted = sub.input
        if subtracted != p or one not in self.constants:
            return None
        value = self.array(one, "constant")
        if value.size != 1 or float(value.ravel()[0]) != 1.0:
            return None
        return p

    def _int_attribute(self, node, name: str, default: int) -> int:
        return int(self._attribute(node, name, default, "INT", "an integer"))

    def _float_attribute(self, node, name: str, default: float) -> float:
        return float(self._attribute(node, name, default, "FLOAT", "a number"))

    def _attribute(self, node, name: str, default, kind: str, what: str):
        """The node's attribute `name` of type `kind` (INT, FLOAT), or `default`."""
        for a in node.attribute:
            if a.name == name:
                if a.type != getattr(self.onnx.AttributeProto, kind):
                    raise UnsupportedModel(f"{self.label(node)}: attribute {name} is not {what}")
                return a.i if kind == "INT" else a.f
        return default

    def _constant_input(self, node, position: int, what: str) -> str:
        if len(node.input) <= position or not node.input[position]:
            raise UnsupportedModel(f"{self.label(node)} has no {what}")
        name = node.input[position]
        if name not in self.constants:
            raise UnsupportedModel(f"{self.label(node)}: its {what} '{name}' is computed, not a "
                                   "constant; jitnet imports the weights as they are stored")
        return name

    def _gemm(self, node, data: str):
        label = self.label(node)
        if len(node.input) < 2 or node.input[0] != data:
            raise UnsupportedModel(f"{label}: the computed tensor must be Gemm's first input A, "
                                   "the weights its B")
        if self._int_attribute(node, "transA", 0):
            raise UnsupportedModel(f"{label} has transA=1 (the batch transposed); jitnet takes "
                                   "[batch, features] rows: export without transA")
        alpha = self._float_attribute(node, "alpha", 1.0)
        beta = self._float_attribute(node, "beta", 1.0)
        b_matrix = self.weights(self._constant_input(node, 1, "B"), "Gemm B", label)
        if b_matrix.ndim != 2:
            raise UnsupportedModel(f"{label}: B has shape {list(b_matrix.shape)}, not 2-D")
        # Y = alpha * A @ B' + beta * C, B' = B^T when transB: jitnet's W [fan_out, fan_in]
        # is B' transposed, so W = B when transB else B^T.
        w = b_matrix if self._int_attribute(node, "transB", 0) else b_matrix.T
        w = alpha * w
        b = None
        if len(node.input) > 2 and node.input[2]:
            c = self.weights(self._constant_input(node, 2, "C"), "Gemm C", label)
            b = beta * self._bias_vector(c, w.shape[0], label, "C")
        return w, b

    def _bias_vector(self, c: np.ndarray, width: int, label: str, what: str) -> np.ndarray:
        """A constant broadcast over the rows: [width], [1, width], [1] or a scalar."""
        if c.size == 1 and c.ndim <= 2:
            return np.full(width, float(c.ravel()[0]))
        if c.shape in ((width,), (1, width)):
            return c.reshape(width).astype(np.float64)
        raise UnsupportedModel(f"{label}: {what} has shape {list(c.shape)}; a layer's bias is "
                               f"[{width}] (or [1, {width}]), the same for every row")

    def _matmul(self, node, data: str):
        label = self.label(node)
        if len(node.input) != 2 or node.input[0] != data:
            raise UnsupportedModel(f"{label}: the computed tensor must be MatMul's first input "
                                   "(rows @ weights [fan_in, fan_out])")
        b_matrix = self.weights(self._constant_input(node, 1, "weights"), "MatMul weights",
                                label)
        if b_matrix.ndim != 2:
            raise UnsupportedModel(f"{label}: its weights have shape {list(b_matrix.shape)}, "
                                   "not 2-D [fan_in, fan_out]")
        return b_matrix.T, None

    def _keeps_rows(self, node, width: int | None) -> bool:
        """Flatten (axis 1) and Reshape to [-1 or 0, width] of a [batch, width] tensor change
        nothing."""
        if node.op_type == "Flatten":
            return self._int_attribute(node, "axis", 1) in (1, -1)
        shape_name = self._constant_input(node, 1, "shape")
        shape = self.array(shape_name, "shape").ravel()
        if shape.dtype.kind not in "iu" or shape.size != 2:
            return False
        rows, columns = int(shape[0]), int(shape[1])
        if rows == 0 and self._int_attribute(node, "allowzero", 0):
            return False  # a literal 0 rows
        if rows == -1:
            return width is not None and columns == width
        return rows == 0 and (columns == -1 or (width is not None and columns == width))

    def _layers(self, source, chain: list) -> NetworkSpec:
        layers: list[_Layer] = []
        width = self.n_in
        ended_by = None  # the node after which nothing but pass-through may come
        for kind, node in chain:
            label = self.label(node)
            if kind == "two_columns":
                last = layers[-1] if layers else None
                if last is None or last.activation != "sigmoid" or last.w.shape[0] != 1 \
                        or ended_by is not None:
                    raise UnsupportedModel(f"{label} builds [1 - p, p] columns from something "
                                           "other than a one-unit sigmoid output")
                ended_by = label
                width = 2
                continue
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedModel(f"{label} is from the {node.domain!r} domain; jitnet "
                                       f"imports {_CHAIN_OPS}")
            if op == "Identity":
                continue
            if op == "Cast":
                to = self._int_attribute(node, "to", -1)
                if to != self.elem:
                    raise UnsupportedModel(f"{label} casts to another type ({to}); jitnet keeps "
                                           "one dtype throughout: re-export without the cast")
                continue
            if op in ("Flatten", "Reshape"):
                if not self._keeps_rows(node, width):
                    raise UnsupportedModel(f"{label} changes the [batch, {width or 'n'}] shape; "
                                           "jitnet imports networks on [batch, features] rows")
                continue
            if ended_by is not None:
                raise UnsupportedModel(f"{label} comes after {ended_by}, which ends the "
                                       "network: Softmax only last")
            if op in ("Gemm", "MatMul"):
                # _chain made sure the node takes exactly one computed tensor
                data = next(i for i in node.input if i and i not in self.constants)
                w, b = self._gemm(node, data) if op == "Gemm" else self._matmul(node, data)
                if width is not None and w.shape[1] != width:
                    raise UnsupportedModel(f"{label}: its weights take {w.shape[1]} inputs, but "
                                           f"the tensor it gets has {width} columns")
                if layers and layers[-1].activation is None:
                    layers[-1].activation = "linear"
                layers.append(_Layer(label, w, b))
                width = w.shape[0]
                continue
            current = layers[-1] if layers else None
            if op == "Add":
                if current is None or current.activation is not None or len(node.input) != 2:
                    after = "the input" if current is None else current.activation_label
                    raise UnsupportedModel(f"{label} follows {after}; jitnet adds a layer's "
                                           "bias right after its Gemm or MatMul")
                operand = self._constant_input(node, 0 if node.input[0] in self.constants
                                               else 1, "bias")
                c = self._bias_vector(self.weights(operand, "bias", label), width, label, "bias")
                current.b = c if current.b is None else current.b + c
                continue
            if op in _OP_ACTIVATIONS:
                if current is None or current.activation is not None:
                    after = "the input" if current is None else current.activation_label
                    raise UnsupportedModel(f"{label} follows {after}; jitnet applies one "
                                           "activation to each layer's Gemm or MatMul + Add")
                if op == "Softmax":
                    default_axis = -1 if self.opset >= 13 else 1
                    axis = self._int_attribute(node, "axis", default_axis)
                    if axis not in (1, -1):
                        raise UnsupportedModel(f"{label} has axis {axis}; jitnet's softmax is "
                                               "over each row's outputs (axis 1 or -1)")
                    ended_by = label
                current.activation = _OP_ACTIVATIONS[op]
                current.activation_label = label
                continue
            raise UnsupportedModel(f"{label} is not one jitnet imports; it imports "
                                   f"{_CHAIN_OPS}, passing over Identity, Cast to the same "
                                   "type, Flatten and Reshape that keep the rows: re-export "
                                   f"the network without the {op}")
        if not layers:
            raise UnsupportedModel("the graph has no Gemm or MatMul: no layer to import")
        if layers[-1].activation is None:
            layers[-1].activation = "linear"
        return self._spec(source, layers)

    def _spec(self, source, layers: list[_Layer]) -> NetworkSpec:
        hidden = layers[0].activation if len(layers) > 1 else "sigmoid"
        for k, layer in enumerate(layers[:-1], start=1):
            if layer.activation not in HIDDEN_ACTIVATIONS:
                raise UnsupportedModel(f"{layer.activation_label}: layer {k} is a hidden layer; "
                                       "Softmax comes only last")
            if layer.activation != hidden:
                raise UnsupportedModel(
                    f"{layer.activation_label}: layer {k} uses {layer.activation}, the layers "
                    f"before it {hidden}; jitnet's hidden layers share one activation")
        output = layers[-1].activation
        if output not in OUTPUT_ACTIVATIONS:
            raise UnsupportedModel(
                f"{layers[-1].activation_label}: the output layer's {output} is not one of "
                f"jitnet's output activations ({', '.join(OUTPUT_ACTIVATIONS)}); re-export "
                "with one of them (a linear output and the activation applied after Predict)")
        bias = any(layer.b is not None for layer in layers)
        weights = tuple((layer.w, (layer.b if layer.b is not None else np.zeros(layer.w.shape[0]))
                         if bias else None) for layer in layers)
        sizes = (layers[0].w.shape[1], *(layer.w.shape[0] for layer in layers))
        return NetworkSpec(tuple(int(s) for s in sizes), hidden, output, "", bias, weights,
                           "float32" if self.numpy_dtype == np.float32 else "float64")

    def _finish(self, spec: NetworkSpec, classes, output: str, input_name: str,
                loss: str | None, dtype: str | None) -> NetworkSpec:
        props = {p.key: p.value for p in self.proto.metadata_props}
        metadata: dict[str, str] = {}
        own = self._own_architecture(props, spec)
        if own is not None:
            metadata.update(self._own_metadata(props))
        producer = " ".join(x for x in (self.proto.producer_name, self.proto.producer_version)
                            if x)
        metadata["source"] = f"onnx: {producer or 'unknown producer'}, input '{input_name}', " \
                             f"output '{output}'"
        if classes is not None:
            metadata["classes"] = json.dumps(classes)
        chosen_loss = loss or (own or {}).get("loss") or (
            "cross_entropy" if spec.output_activation in ("softmax", "sigmoid") else "mse")
        gradient_mode = (own or {}).get("gradient_mode") or "exact"
        hidden = spec.hidden_activation
        if own is not None and len(spec.layer_sizes) == 2:  # one layer: no hidden to read
            hidden = own["hidden_activation"]
        return dataclasses.replace(spec, loss=chosen_loss, dtype=dtype or spec.dtype,
                                   hidden_activation=hidden, gradient_mode=gradient_mode,
                                   metadata=metadata)

    @staticmethod
    def _own_architecture(props: Mapping[str, str], spec: NetworkSpec) -> dict | None:
        """jitnet's own export metadata, when it describes this very graph (a file edited after
        export keeps nothing of it)."""
        try:
            arch = json.loads(props[META_ARCHITECTURE])
            same = (tuple(arch["layer_sizes"]) == spec.layer_sizes
                    and arch["output_activation"] == spec.output_activation
                    and (len(spec.layer_sizes) == 2
                         or arch["hidden_activation"] == spec.hidden_activation)
                    and bool(arch["bias"]) == spec.bias)
            if same and isinstance(arch.get("loss"), str) and \
                    isinstance(arch.get("gradient_mode"), str):
                return arch
        except (KeyError, TypeError, ValueError):
            pass
        return None

    @staticmethod
    def _own_metadata(props: Mapping[str, str]) -> dict[str, str]:
        try:
            kept = json.loads(props.get(META_METADATA, "{}"))
        except ValueError:
            return {}
        if not isinstance(kept, dict):
            return {}
        return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, str)}
