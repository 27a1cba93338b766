"""Client.train's turn-3 keywords: what goes on the wire (class weights computed here) and what
comes back in Progress, through the session's server."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from jitnet import client as jc
from jitnet.client import datasets, wire
from jitnet.v1 import jitnet_pb2 as pb


def request(targets, **options):
    x = np.zeros((len(targets), 2))
    return wire.train_request("m", x, targets, 1, 0.1, 1, 0.0, False, 0, 0.0, 0, True,
                              **options)


def weights_of(req):
    return np.frombuffer(req.sample_weights.raw, dtype="<f8")


def test_balanced_class_weights_are_scikit_learns():
    labels = np.array([0, 0, 0, 1, 2, 2, 0, 1])
    req = request(datasets.one_hot(labels, 3), class_weights="balanced")
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)[labels]
    np.testing.assert_allclose(weights_of(req), expected, rtol=1e-15)
    # ... multiplied into sample weights; one sigmoid output classes by its side of 0.5
    both = request(np.array([[1.0], [0.0], [0.0], [0.0]]), class_weights="balanced",
                   sample_weights=[1, 2, 3, 4])
    np.testing.assert_allclose(weights_of(both), [2.0, 2 * 2 / 3, 3 * 2 / 3, 4 * 2 / 3])


def test_the_keywords_fill_the_request():
    req = request(np.ones((3, 1)), optimizer="adamw", beta2=0.95, weight_decay=0.1,
                  schedule={"kind": "step", "step_epochs": 5, "gamma": 0.5},
                  early_stopping={"patience": 7, "monitor": "validation_accuracy",
                                  "restore_best": False},
                  validation=(np.zeros((2, 2)), [1.0, 0.0]), reset_optimizer=True)
    assert req.optimizer == pb.OPTIMIZER_ADAMW and req.beta2 == 0.95
    assert not req.HasField("beta1") and req.weight_decay == 0.1 and req.reset_optimizer
    assert req.schedule == pb.LearningRateSchedule(kind=pb.LearningRateSchedule.KIND_STEP,
                                                   step_epochs=5, gamma=0.5)
    assert req.early_stopping.patience == 7 and req.early_stopping.HasField("restore_best")
    assert req.early_stopping.monitor == pb.MONITOR_VALIDATION_ACCURACY
    assert list(req.validation_targets.shape) == [2, 1]
    assert request(np.ones((3, 1)), early_stopping=4).early_stopping.patience == 4


@pytest.mark.parametrize("options, words", [
    (dict(optimizer="rmsprop"), "optimizer 'rmsprop' is not one of sgd, adam, adamw"),
    (dict(class_weights="even"), "class_weights 'even'"),
    (dict(class_weights={0: 1.0}), "class_weights has no weight for class 1"),
    (dict(schedule={"kind": "step", "steps": 3}), "schedule"),
    (dict(validation=np.zeros(3)), "validation must be a pair"),
])
def test_bad_keywords_are_refused_before_sending(options, words):
    with pytest.raises(jc.InvalidArgument, match=words.replace("(", r"\(")):
        request(np.array([[1.0], [0.0]]), **options)


def test_adam_with_a_validation_share_and_early_stopping_reports_them(client, model_id):
    iris = datasets.iris()
    client.create_model([4, 8, 3], hidden="tanh", output="softmax", loss="cross-entropy",
                        model_id=model_id, seed=1)
    progress = list(client.train(model_id, iris.inputs, iris.targets, epochs=400,
                                 learning_rate=0.01, batch_size=16, shuffle=True, seed=2,
                                 report_every=1, optimizer="adam", validation_fraction=0.2,
                                 early_stopping={"patience": 5, "min_delta": 1e-3},
                                 class_weights="balanced"))
    last = progress[-1]
    assert last.stop_reason in ("early_stopping", "epochs")
    assert last.iterations == last.epoch * 120  # 30 of the 150 rows held out
    assert 0 < last.best_epoch <= last.epoch and last.learning_rate == 0.01
    assert all(p.validation_loss is not None and p.validation_accuracy is not None
               for p in progress)
    assert last.accuracy > 0.8 and progress[last.best_epoch - 1].validation_accuracy > 0.8
    assert all(p.stop_reason is None for p in progress[:-1])
