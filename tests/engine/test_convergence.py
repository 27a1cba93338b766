"""Convergence: the article's XOR network, and a real data set (scikit-learn's digits).

Both need compiled kernels to be quick (well under a second each), so they are `jit_only`:
the NUMBA_DISABLE_JIT rerun deselects them.
"""

import numpy as np
import pytest

from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Init, Loss, Network

pytestmark = [pytest.mark.jit_only, pytest.mark.usefixtures("tier")]


def test_xor_converges_for_twenty_of_twenty_seeds(xor):
    # 2-4-1, sigmoid, biases on, the article's U[0, 1) init, learning rate 0.5, one sample at a
    # time. "MSE" here is the stricter of the two readings: the plain mean squared error
    # mean((t - y)^2), twice our epoch loss 0.5 * (t - y)^2 for one output.
    inputs, targets = xor
    arch = Architecture((2, 4, 1))
    failures = []
    for seed in range(20):
        net = Network.initialise(arch, Init.UNIFORM, seed)
        (last,) = training.train(net, inputs, targets,
                                 training.TrainOptions(epochs=5000, learning_rate=0.5,
                                                       batch_size=1, report_every=5000))
        outputs = Network(arch, last.params).predict(inputs)
        mse = float(np.mean((targets - outputs) ** 2))
        right_side = bool(np.all((outputs > 0.5) == (targets > 0.5)))
        if not (right_side and mse < 0.01):
            failures.append((seed, outputs.ravel().round(3).tolist(), mse))
    assert not failures, f"seeds that did not learn XOR in 5,000 epochs: {failures}"


@pytest.mark.parametrize("init", [Init.HE, Init.XAVIER], ids=["he", "xavier"])
def test_digits_reach_95_percent_test_accuracy(init):
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    x, y = datasets.load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x / 16.0, y, test_size=0.25, random_state=0)
    arch = Architecture((64, 64, 10), Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    net = Network.initialise(arch, init, seed=0)
    (last,) = training.train(net, x_train, np.eye(10)[y_train],
                             training.TrainOptions(epochs=30, learning_rate=0.1, batch_size=32,
                                                   shuffle=True, seed=0, report_every=30))
    accuracy = float(np.mean(Network(arch, last.params).predict(x_test).argmax(axis=1) == y_test))
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f}"
    # The untrained network is near chance: the accuracy is the training's doing.
    assert np.mean(net.predict(x_test).argmax(axis=1) == y_test) < 0.5
