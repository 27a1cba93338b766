"""Train's turn-3 options through a real in-process server: Adam with validation rows reports
validation loss and accuracy and stores its moments; early stopping commits the best epoch;
sample weights reach the engine; bad options are INVALID_ARGUMENT naming the field and leave
the model as it was."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Loss, Network
from jitnet.service.engine.optimizers import Optimizer
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, XOR, C, array, create, expect_error, tensor, xor_train

SOFTMAX = dict(hidden_activation=pb.ACTIVATION_TANH, output_activation=pb.ACTIVATION_SOFTMAX,
               loss=pb.LOSS_CROSS_ENTROPY)


def weights_of(stub, model_id):
    model = stub.GetModel(pb.GetModelRequest(model_id=model_id, include_weights=True),
                          timeout=TIMEOUT).model
    return model, [(array(layer.weights), array(layer.biases)) for layer in model.layers]


def blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.normal(size=(n, 2)) + labels[:, None], np.eye(3)[labels]


def test_adam_with_validation_reports_it_and_equals_the_engine(stub):
    create(stub, "adam", sizes=(2, 6, 3), seed=2, **SOFTMAX)
    _, start = weights_of(stub, "adam")
    x, t = blobs()
    vx, vt = blobs(12, seed=1)
    w = np.random.default_rng(3).random(40)
    replies = list(stub.Train(pb.TrainRequest(
        model_id="adam", inputs=tensor(x, raw=True), targets=tensor(t), epochs=6,
        learning_rate=0.05, batch_size=8, optimizer=pb.OPTIMIZER_ADAM, weight_decay=0.01,
        validation_inputs=tensor(vx), validation_targets=tensor(vt), report_every=3,
        sample_weights=tensor(w)), timeout=TIMEOUT))
    assert [r.epoch for r in replies] == [3, 6]
    last = replies[-1]
    assert last.stop_reason == pb.STOP_REASON_EPOCHS and last.learning_rate == 0.05
    assert last.HasField("validation_loss") and last.HasField("validation_accuracy")
    assert last.HasField("accuracy")
    # The same call in the engine, on the same weights: the same numbers.
    arch = Architecture((2, 6, 3), Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    net = Network.from_layers(arch, start)
    local = list(training.train(net, x, t, training.TrainOptions(
        epochs=6, learning_rate=0.05, batch_size=8, optimizer=Optimizer.ADAM,
        weight_decay=0.01), validation=(vx, vt), sample_weights=w))[-1]
    model, stored = weights_of(stub, "adam")
    np.testing.assert_array_equal(np.concatenate([np.concatenate([a.ravel(), b.ravel()])
                                                  for a, b in stored]), local.params)
    assert last.validation_loss == local.validation_loss
    assert last.accuracy == local.accuracy
    assert model.optimizer == pb.OPTIMIZER_ADAM and model.last_loss == local.loss


def test_early_stopping_commits_the_best_epoch(stub):
    create(stub, "stop", sizes=(2, 6, 3), seed=4, **SOFTMAX)
    x, t = blobs(seed=5)
    # Validation rows with the labels turned round: their loss rises once training learns.
    vx, vt = blobs(12, seed=6)
    vt = vt[:, ::-1]
    replies = list(stub.Train(pb.TrainRequest(
        model_id="stop", inputs=tensor(x), targets=tensor(t), epochs=500, learning_rate=0.05,
        batch_size=8, optimizer=pb.OPTIMIZER_ADAM, validation_inputs=tensor(vx),
        validation_targets=tensor(vt), early_stopping=pb.EarlyStopping(patience=4),
        report_every=1), timeout=TIMEOUT))
    last = replies[-1]
    assert last.stop_reason == pb.STOP_REASON_EARLY_STOPPING
    assert last.epoch == last.best_epoch + 4 < 500
    best = replies[last.best_epoch - 1]
    assert best.validation_loss == min(r.validation_loss for r in replies)
    # The last commit holds the best epoch's weights: its predictions give its validation loss.
    out = array(stub.Predict(pb.PredictRequest(model_id="stop", inputs=tensor(vx)),
                             timeout=TIMEOUT).outputs)
    loss = -np.mean(np.sum(vt * np.log(out), axis=1))
    assert loss == pytest.approx(best.validation_loss, rel=1e-12)
    assert last.model_version == len(replies) + 1  # versions still only grow


@pytest.mark.parametrize("fields, words", [
    (dict(optimizer=pb.OPTIMIZER_ADAM, beta1=1.0), ("beta1", "[0, 1)")),
    (dict(weight_decay=-1.0), ("weight_decay",)),
    (dict(nesterov=True), ("nesterov", "momentum")),
    (dict(validation_fraction=1.5), ("validation_fraction",)),
    (dict(validation_inputs=tensor(XOR.inputs)), ("validation_targets",)),
    (dict(validation_inputs=tensor(XOR.inputs[:, :1]), validation_targets=tensor(XOR.targets)),
     ("validation_inputs",)),
    (dict(sample_weights=tensor([1.0, 2.0])), ("sample_weights",)),
    (dict(sample_weights=tensor([1.0, -1.0, 1.0, 1.0])), ("sample_weights",)),
    (dict(schedule=pb.LearningRateSchedule(kind=pb.LearningRateSchedule.KIND_STEP)),
     ("schedule.step_epochs",)),
    (dict(early_stopping=pb.EarlyStopping(patience=2, monitor=pb.MONITOR_VALIDATION_LOSS)),
     ("early_stopping.monitor",)),
    (dict(optimizer=9), ("optimizer",)),
])
def test_bad_options_are_invalid_argument_naming_the_field(stub, fields, words):
    create(stub, "bad")
    expect_error(C.INVALID_ARGUMENT, lambda: stub.Train(xor_train("bad", 5, **fields),
                                                        timeout=TIMEOUT), *words)
    model = stub.GetModel(pb.GetModelRequest(model_id="bad"), timeout=TIMEOUT).model
    assert model.version == 1 and model.epochs_trained == 0
