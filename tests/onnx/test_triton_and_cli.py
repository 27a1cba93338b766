"""The Triton model repository (structure, and ONNX Runtime loading the file) and the
`jitnet export` / `jitnet import` commands."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from jitnet.client import onnx as jitnet_onnx

from .conftest import onnx, run_onnxruntime


def _model_config_class():
    """Triton's own ModelConfig message, from the descriptor tritonclient ships, built in a
    pool of its own: importing tritonclient.grpc would register its `inference` messages in
    the default pool, where jitnet's Open Inference Protocol messages already are."""
    import ast
    import importlib.util
    import pathlib

    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    found = importlib.util.find_spec("tritonclient")
    assert found is not None, "tritonclient is in the test extra"
    source = pathlib.Path(found.submodule_search_locations[0], "grpc", "model_config_pb2.py")
    serialized = next(ast.literal_eval(call.args[0]) for call in ast.walk(ast.parse(
        source.read_text())) if isinstance(call, ast.Call)
        and getattr(call.func, "attr", "") == "AddSerializedFile")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
    config = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))
    return config, pool.FindEnumTypeByName("inference.DataType")


def _triton_config(text: str):
    """config.pbtxt parsed as Triton parses it (protobuf text format, ModelConfig)."""
    config, data_type = _model_config_class()
    return text_format.Parse(text, config()), data_type


def test_triton_repository_layout(client, model_id, tmp_path, rows):
    client.create_model([64, 7, 10], hidden="tanh", output="softmax", loss="cross_entropy",
                        model_id=model_id)
    model = client.get_model(model_id, include_weights=True)
    folder = jitnet_onnx.write_triton_repository(model, tmp_path / "repo", "digits",
                                                 max_batch_size=32)
    assert folder == tmp_path / "repo" / "digits"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt"]
    config, data_type = _triton_config((folder / "config.pbtxt").read_text())
    assert config.name == "digits" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and config.HasField("dynamic_batching")
    (inp,), (out,) = config.input, config.output
    assert (inp.name, list(inp.dims), out.name, list(out.dims)) == ("input", [64], "output", [10])
    assert inp.data_type == out.data_type == data_type.values_by_name["TYPE_FP64"].number
    # The file matches what the config says, and runs.
    data = (folder / "1" / "model.onnx").read_bytes()
    proto = onnx.load_model_from_string(data)
    assert [i.name for i in proto.graph.input] == [inp.name]
    assert [o.name for o in proto.graph.output] == [out.name]
    np.testing.assert_allclose(run_onnxruntime(data, rows), client.predict(model_id, rows),
                               rtol=0, atol=1e-12)


def test_triton_name_and_batch_are_checked(client, model_id, tmp_path):
    client.create_model([2, 3, 1], model_id=model_id)
    model = client.get_model(model_id, include_weights=True)
    with pytest.raises(ValueError, match="Triton model name '../up'"):
        jitnet_onnx.write_triton_repository(model, tmp_path, "../up")
    with pytest.raises(ValueError, match="max_batch_size is 0"):
        jitnet_onnx.triton_config(model, max_batch_size=0)
    assert not any(tmp_path.iterdir())


@pytest.fixture
def run(cli_run):
    return cli_run


def test_cli_export_import(run, client, model_id, tmp_path, rows):
    client.create_model([64, 5, 3], hidden="relu", output="sigmoid", model_id=model_id)
    path = tmp_path / "m.onnx"
    code, out, err = run("export", model_id, str(path), "--triton-repo", str(tmp_path / "repo"))
    assert code == 0, err
    assert out.startswith(f"wrote {path}: model '{model_id}' version 1")
    assert (tmp_path / "repo" / model_id / "1" / "model.onnx").read_bytes() == path.read_bytes()
    code, out, err = run("import", str(path), "--id", model_id + "-copy", "--loss",
                         "cross-entropy")
    assert code == 0, err
    assert out.startswith(f"created model '{model_id}-copy' from {path}: 64-5-3 relu/sigmoid "
                          "cross_entropy")
    np.testing.assert_array_equal(client.predict(model_id + "-copy", rows),
                                  client.predict(model_id, rows))


def test_cli_errors(run, client, model_id, tmp_path):
    code, _, err = run("export", model_id)
    assert code == 2 and "give the .onnx file to write, or --triton-repo DIR" in err
    code, _, err = run("export", "no-such-model", str(tmp_path / "x.onnx"))
    assert code == 3 and "NOT_FOUND" in err and not (tmp_path / "x.onnx").exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00 not onnx")
    code, _, err = run("import", str(bad), "--id", model_id)
    assert code == 2 and "not an ONNX model" in err
    code, _, err = run("import", str(tmp_path / "missing.onnx"), "--id", model_id)
    assert code == 1 and "missing.onnx" in err
