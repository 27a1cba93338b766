"""Import: the files torch.onnx.export and skl2onnx make of dense nets, as jitnet models whose
Predict equals the source library's outputs and ONNX Runtime's on the same file."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest

from .conftest import run_onnxruntime

# Every side computes in float64: dot products of <= 64 terms of ~|x|*|w| ~ 5 (inputs ~N(0,4),
# weights ~U(+-1/sqrt(fan_in)) from torch's and sklearn's inits), a few hundred ulps of 5 at
# worst (~1e-13) per layer, through activations with slope <= 1: inside 1e-12.
TOLERANCE = 1e-12

torch = pytest.importorskip("torch")
nn = torch.nn


def _torch_file(net, n_in: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(net, torch.zeros(2, n_in, dtype=torch.float64), buffer, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return buffer.getvalue()


TORCH_NETS = {
    "relu-softmax": lambda: nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10),
                                          nn.Softmax(dim=1)),
    "tanh-sigmoid-no-bias": lambda: nn.Sequential(
        nn.Linear(64, 8, bias=False), nn.Tanh(), nn.Linear(8, 8, bias=False), nn.Tanh(),
        nn.Linear(8, 3, bias=False), nn.Sigmoid()),
    "sigmoid-linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.Sigmoid(),
                                            nn.Linear(5, 2)),
    "one-layer-softmax-last-axis": lambda: nn.Sequential(nn.Linear(64, 4), nn.Softmax(dim=-1)),
}


@pytest.mark.parametrize("name", list(TORCH_NETS))
def test_torch_export_imports(client, model_id, rows, name):
    torch.manual_seed(len(name))
    net = TORCH_NETS[name]().double().eval()
    data = _torch_file(net, 64)
    model = client.import_onnx(data, model_id)
    assert model.layer_sizes[0] == 64
    with torch.no_grad():
        expected = net(torch.from_numpy(rows)).numpy()
    got = client.predict(model_id, rows)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got, run_onnxruntime(data, rows), rtol=0, atol=TOLERANCE)
    assert "input 'x', output 'y'" in model.metadata["source"]


def test_torch_float32_imports_as_float32(client, model_id):
    """A FLOAT graph reads as a float32 network; the server's dtype support decides the rest,
    so this checks what the client sends."""
    from jitnet.client import onnx as jitnet_onnx

    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 4), buffer, dynamo=False)
    spec = jitnet_onnx.from_onnx(buffer.getvalue())
    assert spec.dtype == "float32" and spec.layer_sizes == (4, 3, 2)
    weight = net[0].weight.detach().numpy()
    assert np.array_equal(spec.layers[0][0], weight.astype(np.float64))  # float32 is exact


def _digits(n_classes=10):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True, n_class=n_classes)
    return x / 16.0, y


def _skl2onnx_file(estimator, zipmap: bool) -> bytes:
    from skl2onnx import to_onnx

    x = np.zeros((1, estimator.n_features_in_))
    options = {"zipmap": False} if not zipmap and hasattr(estimator, "classes_") else None
    options = None if options is None else {id(estimator): options}
    return to_onnx(estimator, x, options=options, target_opset=17).SerializeToString()


def _fitted_mlp(kind, hidden, activation, n_classes=10, seed=0):
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    x, y = _digits(n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: a few iterations are enough here
        if kind == "classifier":
            return MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=15,
                                 random_state=seed).fit(x, y), x
        # One target: skl2onnx 1.20 reshapes a regressor's output to [-1, 1] whatever its
        # width, which jitnet rightly refuses for several targets (the rows would change).
        return MLPRegressor(hidden_layer_sizes=hidden, activation=activation, max_iter=15,
                            random_state=seed).fit(x, x[:, 20] + y / 10), x


@pytest.mark.parametrize("kind,hidden,activation,n_classes", [
    ("classifier", (16,), "relu", 10),
    ("classifier", (8, 8), "tanh", 3),
    ("classifier", (6,), "logistic", 2),
    ("regressor", (12,), "relu", 10),
    ("regressor", (5, 5), "identity", 10),
])
def test_skl2onnx_imports_without_zipmap(client, model_id, kind, hidden, activation, n_classes):
    mlp, x = _fitted_mlp(kind, hidden, activation, n_classes)
    data = _skl2onnx_file(mlp, zipmap=False)
    model = client.import_onnx(data, model_id)
    got = client.predict(model_id, x[:50])
    if kind == "classifier":
        expected = mlp.predict_proba(x[:50])
        assert json.loads(model.metadata["classes"]) == mlp.classes_.tolist()
        if n_classes == 2:  # jitnet keeps p, skl2onnx's file the two columns [1 - p, p]
            assert model.output_activation == "sigmoid" and model.layer_sizes[-1] == 1
            expected = expected[:, 1:]
        onnx_side = run_onnxruntime(data, x[:50], "probabilities")
        onnx_side = onnx_side[:, 1:] if n_classes == 2 else onnx_side
    else:
        expected = mlp.predict(x[:50]).reshape(-1, 1)
        onnx_side = run_onnxruntime(data, x[:50])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(got, onnx_side.reshape(got.shape), rtol=0, atol=TOLERANCE)


def test_skl2onnx_classifier_with_zipmap_float32(client, model_id):
    """skl2onnx's default: FLOAT, a ZipMap of the probabilities; the probabilities import."""
    from skl2onnx import to_onnx

    from jitnet.client import onnx as jitnet_onnx

    mlp, x = _fitted_mlp("classifier", (10,), "relu", 4)
    data = to_onnx(mlp, x[:1].astype(np.float32), target_opset=17).SerializeToString()
    spec = jitnet_onnx.from_onnx(data)
    assert spec.dtype == "float32" and spec.output_activation == "softmax"
    assert json.loads(spec.metadata["classes"]) == [0, 1, 2, 3]
    # In float64, the float32 weights give float32's probabilities to float32's precision.
    probabilities = run_onnxruntime(data, x[:20].astype(np.float32), "output_probability")
    table = np.array([[row[c] for c in range(4)] for row in probabilities])
    spec64 = spec.with_changes(dtype="float64")
    client.create_model(model_id=model_id, **spec64.create_arguments())
    np.testing.assert_allclose(client.predict(model_id, x[:20]), table, rtol=0, atol=1e-5)


def test_import_sklearn_directly(client, model_id):
    for kind, hidden, activation, n_classes in [("classifier", (16,), "relu", 10),
                                                ("classifier", (7,), "tanh", 2),
                                                ("regressor", (9, 4), "logistic", 10)]:
        mlp, x = _fitted_mlp(kind, hidden, activation, n_classes)
        name = f"{model_id}-{kind}-{n_classes}"
        model = client.import_sklearn(mlp, name)
        got = client.predict(name, x[:40])
        if kind == "classifier":
            expected = mlp.predict_proba(x[:40])
            expected = expected[:, 1:] if n_classes == 2 else expected
            assert json.loads(model.metadata["classes"]) == mlp.classes_.tolist()
            assert model.loss == "cross_entropy"
        else:
            expected = mlp.predict(x[:40]).reshape(-1, 1)
            assert model.output_activation == "linear" and model.loss == "mse"
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_import_sklearn_refuses_other_estimators(client):
    from sklearn.linear_model import LogisticRegression

    from jitnet.client.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="LogisticRegression is not an MLPClassifier"):
        client.import_sklearn(LogisticRegression(), "never")
