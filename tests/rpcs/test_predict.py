"""Predict through a real in-process server: both tensor forms, any number of rows, the
one-sample fast path answering exactly as the general path, and only committed versions seen
while a Train runs."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, C, array, create, error_of, long_train_request, tensor


def test_predict_values_raw_zero_rows_and_row_counts_going_down(stub):
    create(stub, "p", sizes=(2, 8, 3), output_activation=pb.ACTIVATION_SOFTMAX)
    rng = np.random.default_rng(1)
    x = rng.random((300, 2))
    raw = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x, raw=True)),
                       timeout=TIMEOUT)
    assert raw.outputs.raw and not raw.outputs.values and raw.model_version == 1
    out = array(raw.outputs)
    assert out.shape == (300, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    values = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x[:5])), timeout=TIMEOUT)
    assert values.outputs.values and not values.outputs.raw
    # fewer rows than before (the BLAS and loop paths may differ in the last bit)
    np.testing.assert_allclose(array(values.outputs), out[:5], rtol=1e-12)
    one = stub.Predict(pb.PredictRequest(model_id="p", inputs=tensor(x[:1], raw=True)),
                       timeout=TIMEOUT)
    np.testing.assert_allclose(array(one.outputs), out[:1], rtol=1e-12)
    empty = stub.Predict(pb.PredictRequest(model_id="p", inputs=pb.Tensor(shape=[0, 2])),
                         timeout=TIMEOUT)
    assert list(empty.outputs.shape) == [0, 3]


def test_predict_one_raw_sample_answers_as_every_other_form(stub):
    """One raw sample takes the encoded fast path; its reply is the very message the general
    path builds (values in, two rows in), and what it cannot answer gets the general path's
    errors."""
    create(stub, "one", sizes=(3, 6, 4), output_activation=pb.ACTIVATION_SOFTMAX)
    x = np.random.default_rng(2).random((2, 3))

    def predict(inputs):
        return stub.Predict(pb.PredictRequest(model_id="one", inputs=inputs), timeout=TIMEOUT)

    fast = predict(tensor(x[:1], raw=True))
    assert list(fast.outputs.shape) == [1, 4] and fast.model_version == 1
    assert array(fast.outputs).tobytes() == array(predict(tensor(x[:1])).outputs).tobytes()
    np.testing.assert_allclose(array(fast.outputs), array(predict(tensor(x, raw=True)).outputs)[:1],
                               rtol=1e-12)
    stub.Step(pb.StepRequest(model_id="one", input=[0, 1, 0], target=[1, 0, 0, 0],
                             learning_rate=0.5), timeout=TIMEOUT)
    after = predict(tensor(x[:1], raw=True))
    assert after.model_version == 2
    assert array(after.outputs).tolist() != array(fast.outputs).tolist()

    def error(inputs, model_id="one"):
        exc = error_of(lambda: stub.Predict(pb.PredictRequest(model_id=model_id, inputs=inputs),
                                            timeout=TIMEOUT))
        return exc.code(), exc.details()

    code, details = error(tensor(np.ones((1, 2)), raw=True))  # the model takes 3 inputs
    assert code == C.INVALID_ARGUMENT and "3" in details
    code, details = error(tensor(np.array([[0.0, np.nan, 1.0]]), raw=True))
    assert code == C.INVALID_ARGUMENT and "finite" in details
    assert error(tensor(x[:1], raw=True), "missing")[0] == C.NOT_FOUND
    both = tensor(x[:1], raw=True)
    both.values.extend([1.0, 2.0, 3.0])
    assert error(both, "missing")[0] == C.INVALID_ARGUMENT  # the request first, as before




def test_predict_during_train_sees_only_committed_versions(stub):
    create(stub, "live", sizes=(2, 16, 1))
    request = long_train_request("live", epochs=400, report_every=10)
    progress: list[pb.TrainResponse] = []
    trainer = threading.Thread(target=lambda: progress.extend(stub.Train(request, timeout=60)))
    trainer.start()
    x = tensor(np.random.default_rng(2).random((16, 2)), raw=True)
    outputs = defaultdict(set)
    for _ in range(2000):  # bounded
        reply = stub.Predict(pb.PredictRequest(model_id="live", inputs=x), timeout=TIMEOUT)
        outputs[reply.model_version].add(reply.outputs.raw)
        if not trainer.is_alive():
            break
    trainer.join(60)
    assert progress and progress[-1].done
    committed = {1} | {p.model_version for p in progress}
    assert set(outputs) <= committed
    assert len(outputs) > 1, "Predict should have seen training advance"
    assert all(len(seen) == 1 for seen in outputs.values())  # one version, one set of weights
    final = stub.Predict(pb.PredictRequest(model_id="live", inputs=x), timeout=TIMEOUT)
    assert final.model_version == progress[-1].model_version

