"""The committed generated code matches the proto, and the proto keeps api.md's surface."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ["jitnet_pb2.py", "jitnet_pb2.pyi", "jitnet_pb2_grpc.py"]

# api.md's service: these names and shapes are the contract clients depend on.
API_RPCS = {
    "CreateModel": ("CreateModelRequest", "CreateModelResponse", False),
    "GetModel": ("GetModelRequest", "GetModelResponse", False),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False),
    "DeleteModel": ("DeleteModelRequest", "DeleteModelResponse", False),
    "Train": ("TrainRequest", "TrainResponse", True),  # server-streaming progress
    "Step": ("StepRequest", "StepResponse", False),
    "Predict": ("PredictRequest", "PredictResponse", False),
}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> pathlib.Path:
    # The same script a developer runs, in a subprocess so protoc sees a clean state.
    out = tmp_path_factory.mktemp("generated")
    subprocess.run(
        [sys.executable, str(PROTOS / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out / "jitnet" / "v1"


@pytest.mark.parametrize("name", GENERATED)
def test_generated_code_is_fresh(regenerated, name):
    committed = PROTOS / "jitnet" / "v1" / name
    fresh = regenerated / name
    assert fresh.is_file(), f"protos/generate.py did not produce {name}"
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"protos/jitnet/v1/{name} is stale or hand-edited: run `python protos/generate.py` "
        "(with grpcio-tools==1.85.1, as pinned in pyproject.toml) and commit the result"
    )


def test_service_matches_api_md():
    from jitnet.v1 import jitnet_pb2

    file = jitnet_pb2.DESCRIPTOR
    assert file.name == "jitnet/v1/jitnet.proto"  # buf STANDARD: path matches the package
    assert file.package == "jitnet.v1"
    assert list(file.services_by_name) == ["NetworkService"]

    methods = file.services_by_name["NetworkService"].methods_by_name
    assert set(methods) == set(API_RPCS), "NetworkService must have exactly api.md's 7 RPCs"
    for name, (request, response, server_streaming) in API_RPCS.items():
        method = methods[name]
        assert method.input_type.full_name == f"jitnet.v1.{request}", name
        assert method.output_type.full_name == f"jitnet.v1.{response}", name
        assert method.client_streaming is False, name
        assert method.server_streaming is server_streaming, name


def test_tensor_field_numbers_match_api_md():
    # Renumbering breaks every stored or in-flight message; spot-check the most shared message.
    from jitnet.v1 import jitnet_pb2

    fields = {f.name: f.number for f in jitnet_pb2.Tensor.DESCRIPTOR.fields}
    assert fields == {"shape": 1, "values": 2, "raw": 3}
