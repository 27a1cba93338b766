"""Step and Train through a real in-process server: a dry run keeps the model, Train streams
committed progress, learns XOR, adds up its counters and stops at a target loss."""

from __future__ import annotations

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    ARTICLE_OUTPUT,
    TIMEOUT,
    XOR,
    array,
    article_request,
    create,
    xor_predict,
    xor_train,
)


def test_step_dry_run_keeps_the_model(stub):
    stub.CreateModel(article_request("s"), timeout=TIMEOUT)
    dry = stub.Step(pb.StepRequest(model_id="s", input=[0, 1], target=[1], learning_rate=0.5,
                                   dry_run=True), timeout=TIMEOUT)
    assert dry.model_version == 1
    model = stub.GetModel(pb.GetModelRequest(model_id="s", include_weights=True),
                          timeout=TIMEOUT).model
    assert model.version == 1 and model.iterations == 0
    np.testing.assert_array_equal(array(model.layers[1].weights), ARTICLE_OUTPUT)
    assert array(dry.layers[1].updated.weights).tolist() != ARTICLE_OUTPUT


def test_train_streams_committed_progress_and_learns_xor(stub):
    create(stub, "xor", seed=3)
    replies = list(stub.Train(xor_train("xor", 3000, raw=True, report_every=500, momentum=0.5),
                              timeout=TIMEOUT))
    assert [r.epoch for r in replies] == [500, 1000, 1500, 2000, 2500, 3000]
    assert [r.model_version for r in replies] == list(range(2, 8))
    assert [r.done for r in replies] == [False] * 5 + [True]
    assert replies[-1].iterations == 12000 and replies[-1].loss < replies[0].loss
    model = stub.GetModel(pb.GetModelRequest(model_id="xor"), timeout=TIMEOUT).model
    assert (model.version, model.epochs_trained, model.iterations) == (7, 3000, 12000)
    assert model.last_loss == replies[-1].loss
    out = array(stub.Predict(xor_predict("xor"), timeout=TIMEOUT).outputs).ravel()
    assert (np.round(out) == XOR.targets.ravel()).all()
    # counters keep adding up over calls; report_every 0 still commits at the end
    again = list(stub.Train(xor_train("xor", 10, batch_size=4, shuffle=True, seed=2),
                            timeout=TIMEOUT))
    assert len(again) == 1 and again[0].done and again[0].model_version == 8
    model = stub.GetModel(pb.GetModelRequest(model_id="xor"), timeout=TIMEOUT).model
    assert (model.epochs_trained, model.iterations) == (3010, 12040)


def test_train_target_loss_stops_early(stub):
    create(stub, "early", seed=3)
    replies = list(stub.Train(xor_train("early", 100000, target_loss=0.2), timeout=TIMEOUT))
    assert replies[-1].done and replies[-1].loss <= 0.2 and replies[-1].epoch < 100000
