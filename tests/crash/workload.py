"""The models and requests of the crash tests: a medium model trained and a small one stepped,
with requests that replay exactly (deterministic data, seeds, momentum 0)."""

from __future__ import annotations

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import tensor

REPORT_EVERY = 10
ARCH_M = pb.Architecture(layer_sizes=[8, 64, 8], hidden_activation=pb.ACTIVATION_TANH,
                         output_activation=pb.ACTIVATION_LINEAR)  # 1096 parameters, 17 KB file
ARCH_S = pb.Architecture(layer_sizes=[8, 32, 2])


def train_request(model_id: str, epochs: int, outputs: int = 8) -> pb.TrainRequest:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8))
    y = np.tanh(x @ rng.normal(size=(8, outputs)) / 3)
    # momentum 0: the update does not read the stored momentum state, so a replay from the
    # weights alone is exact
    return pb.TrainRequest(model_id=model_id, inputs=tensor(x, raw=True),
                           targets=tensor(y, raw=True), epochs=epochs, learning_rate=0.01,
                           batch_size=4, shuffle=True, seed=11, report_every=REPORT_EVERY)


def step_request(model_id: str, j: int) -> pb.StepRequest:
    rng = np.random.default_rng(j)
    return pb.StepRequest(model_id=model_id, input=rng.random(8).tolist(),
                          target=rng.random(2).tolist(), learning_rate=0.05)
