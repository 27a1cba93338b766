"""The committed generated code matches the proto, and the proto keeps api.md's surface."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = [f"v1/jitnet_pb2{suffix}" for suffix in (".py", ".pyi", "_grpc.py")] + [
    f"inference/open_inference_grpc_pb2{suffix}" for suffix in (".py", ".pyi", "_grpc.py")]

# api.md's service: these names and shapes are the contract clients depend on.
# (request, response, client streaming, server streaming)
API_RPCS = {
    "CreateModel": ("CreateModelRequest", "CreateModelResponse", False, False),
    "GetModel": ("GetModelRequest", "GetModelResponse", False, False),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
    "DeleteModel": ("DeleteModelRequest", "DeleteModelResponse", False, False),
    "Train": ("TrainRequest", "TrainResponse", False, True),  # server-streaming progress
    "Step": ("StepRequest", "StepResponse", False, False),
    "Predict": ("PredictRequest", "PredictResponse", False, False),
    # Turn 3's data sets. api.md sketches `returns (Dataset)`; the proto wraps the data set in a
    # response of the RPC's own name, as CreateModel and GetModel wrap a Model (buf STANDARD).
    "UploadDataset": ("UploadDatasetRequest", "UploadDatasetResponse", True, False),
    "GetDataset": ("GetDatasetRequest", "GetDatasetResponse", False, False),
    "ListDatasets": ("ListDatasetsRequest", "ListDatasetsResponse", False, False),
    "DeleteDataset": ("DeleteDatasetRequest", "DeleteDatasetResponse", False, False),
}
# RPCs added since (api.md: "add fields, messages and RPCs freely where users need them").
ADDED_RPCS = {
    "CheckGradients": ("CheckGradientsRequest", "CheckGradientsResponse", False, False),
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
    return out / "jitnet"


@pytest.mark.parametrize("name", GENERATED)
def test_generated_code_is_fresh(regenerated, name):
    committed = PROTOS / "jitnet" / name
    fresh = regenerated / name
    assert fresh.is_file(), f"protos/generate.py did not produce {name}"
    assert committed.read_bytes() == fresh.read_bytes(), (
        f"protos/jitnet/{name} is stale or hand-edited: run `python protos/generate.py` "
        "(with grpcio-tools==1.85.1, as pinned in pyproject.toml) and commit the result"
    )


def test_service_matches_api_md():
    from jitnet.v1 import jitnet_pb2

    file = jitnet_pb2.DESCRIPTOR
    assert file.name == "jitnet/v1/jitnet.proto"  # buf STANDARD: path matches the package
    assert file.package == "jitnet.v1"
    assert list(file.services_by_name) == ["NetworkService"]

    methods = file.services_by_name["NetworkService"].methods_by_name
    assert set(methods) == set(API_RPCS) | set(ADDED_RPCS), (
        "NetworkService must have api.md's RPCs and those ADDED_RPCS lists")
    for name, (request, response, client_streaming, server_streaming) in {
            **API_RPCS, **ADDED_RPCS}.items():
        method = methods[name]
        assert method.input_type.full_name == f"jitnet.v1.{request}", name
        assert method.output_type.full_name == f"jitnet.v1.{response}", name
        assert method.client_streaming is client_streaming, name
        assert method.server_streaming is server_streaming, name


def test_tensor_field_numbers_match_api_md():
    # Renumbering breaks every stored or in-flight message; spot-check the most shared message.
    from jitnet.v1 import jitnet_pb2

    fields = {f.name: f.number for f in jitnet_pb2.Tensor.DESCRIPTOR.fields}
    assert fields == {"shape": 1, "values": 2, "raw": 3, "dtype": 4}


def test_turn_3_names_are_api_mds():
    # api.md's "Additions, turn 3": the names are the contract (JSON and every generated client
    # use them), the numbers the next free ones of the landed proto.
    from jitnet.v1 import jitnet_pb2 as pb

    def names(message):
        return {f.name for f in message.DESCRIPTOR.fields}

    assert {"optimizer", "beta1", "beta2", "epsilon", "weight_decay", "nesterov", "schedule",
            "validation_inputs", "validation_targets", "validation_fraction", "early_stopping",
            "sample_weights", "reset_optimizer", "dataset_id",
            "validation_dataset_id"} <= names(pb.TrainRequest)
    assert {"validation_loss", "accuracy", "validation_accuracy", "learning_rate", "best_epoch",
            "stop_reason"} <= names(pb.TrainResponse)
    assert names(pb.EarlyStopping) == {"patience", "min_delta", "restore_best", "monitor"}
    assert names(pb.LearningRateSchedule) == {"kind", "step_epochs", "gamma", "patience",
                                              "min_learning_rate"}
    assert "dtype" in names(pb.Architecture)
    values = {enum: set(getattr(pb, enum).keys()) for enum in
              ("Optimizer", "Monitor", "StopReason", "Dtype")}
    assert values["Optimizer"] == {"OPTIMIZER_UNSPECIFIED", "OPTIMIZER_SGD", "OPTIMIZER_ADAM",
                                   "OPTIMIZER_ADAMW"}
    assert values["Dtype"] == {"DTYPE_UNSPECIFIED", "DTYPE_FLOAT64", "DTYPE_FLOAT32"}
    assert "STOP_REASON_EARLY_STOPPING" in values["StopReason"]
    assert "MONITOR_VALIDATION_ACCURACY" in values["Monitor"]
    assert names(pb.Dataset) == {"id", "rows", "n_inputs", "n_targets", "dtype", "bytes",
                                 "sha256", "create_time"}


# The Open Inference Protocol: the specification's names and numbers are the wire; clients
# (tritonclient, the KServe SDK) call these paths and send these field numbers.
OIP_RPCS = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
            "ModelInfer"]
OIP_FIELDS = {
    "ModelInferRequest": {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                          "inputs": 5, "outputs": 6, "raw_input_contents": 7},
    "ModelInferRequest.InferInputTensor": {"name": 1, "datatype": 2, "shape": 3,
                                           "parameters": 4, "contents": 5},
    "ModelInferRequest.InferRequestedOutputTensor": {"name": 1, "parameters": 2},
    "ModelInferResponse": {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                           "outputs": 5, "raw_output_contents": 6},
    "ModelInferResponse.InferOutputTensor": {"name": 1, "datatype": 2, "shape": 3,
                                             "parameters": 4, "contents": 5},
    "InferTensorContents": {"bool_contents": 1, "int_contents": 2, "int64_contents": 3,
                            "uint_contents": 4, "uint64_contents": 5, "fp32_contents": 6,
                            "fp64_contents": 7, "bytes_contents": 8},
    "InferParameter": {"bool_param": 1, "int64_param": 2, "string_param": 3,
                       "double_param": 4, "uint64_param": 5},
    "ModelMetadataResponse": {"name": 1, "versions": 2, "platform": 3, "inputs": 4,
                              "outputs": 5, "properties": 6},
    "ModelMetadataResponse.TensorMetadata": {"name": 1, "datatype": 2, "shape": 3},
    "ModelReadyRequest": {"name": 1, "version": 2},
    "ModelMetadataRequest": {"name": 1, "version": 2},
    "ServerMetadataResponse": {"name": 1, "version": 2, "extensions": 3},
    "ServerLiveResponse": {"live": 1}, "ServerReadyResponse": {"ready": 1},
    "ModelReadyResponse": {"ready": 1},
}


def test_inference_protocol_keeps_the_specifications_names():
    from jitnet.inference import open_inference_grpc_pb2 as oip

    file = oip.DESCRIPTOR
    assert file.package == "inference"
    assert list(file.services_by_name) == ["GRPCInferenceService"]
    methods = file.services_by_name["GRPCInferenceService"].methods_by_name
    assert list(methods) == OIP_RPCS
    for name, method in methods.items():
        assert method.input_type.full_name == f"inference.{name}Request"
        assert method.output_type.full_name == f"inference.{name}Response"
        assert not method.client_streaming and not method.server_streaming, name
    for message, fields in OIP_FIELDS.items():
        descriptor = file.message_types_by_name[message.split(".")[0]]
        for nested in message.split(".")[1:]:
            descriptor = descriptor.nested_types_by_name[nested]
        assert {f.name: f.number for f in descriptor.fields} == fields, message
