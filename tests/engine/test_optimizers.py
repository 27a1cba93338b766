"""The optimizers, schedules and sample weights of training.train against torch.optim on the same
initial weights and the same batches (float64, no shuffle); optimizer state across calls.

Tolerance: float64 rounding is about 1.1e-16 per operation. A step's update touches each weight
through a few tens of operations (the batch gradient of a 4-5-3 net, the optimizer's formula),
and 200 steps of a contracting descent accumulate those errors about linearly: about 200 * 50 *
1.1e-16 ~ 1e-12 relative. Adam divides by sqrt(v_hat) + epsilon, which can magnify the relative
error of a tiny gradient by up to its own ratio, so the small-gradient case gets an absolute
floor of the same size in the weights' units (they are of order 1)."""

import numpy as np
import pytest
import torch

from jitnet.service import errors
from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Loss, Network
from jitnet.service.engine.optimizers import Optimizer
from jitnet.service.engine.schedules import Kind, Schedule

RTOL, ATOL = 1e-12, 1e-12
STEPS = 200
ARCH = Architecture((4, 5, 3), Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
MSE_ARCH = Architecture((4, 5, 2), Activation.SIGMOID, Activation.LINEAR, Loss.MSE)


def problem(arch=ARCH, n=24, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    net = Network.initialise(arch, seed=seed)
    x = rng.normal(size=(n, arch.layer_sizes[0])) * scale
    if arch.output_activation is Activation.SOFTMAX:
        t = np.eye(arch.layer_sizes[-1])[rng.integers(0, arch.layer_sizes[-1], n)]
    else:
        t = rng.normal(size=(n, arch.layer_sizes[-1]))
    return net, x, t


def torch_net(net):
    """torch layers with net's weights, and the parameter groups api.md names: weights with
    weight_decay, biases without."""
    layers = [torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
              for w, _ in net.layers()]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, net.layers(), strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    return layers


def torch_loss(layers, arch, x, t, w=None):
    hidden = {Activation.TANH: torch.tanh, Activation.SIGMOID: torch.sigmoid,
              Activation.RELU: torch.relu}[arch.hidden_activation]
    a = x
    for layer in layers[:-1]:
        a = hidden(layer(a))
    z = layers[-1](a)
    if arch.loss is Loss.CROSS_ENTROPY:
        per_row = -(t * torch.log_softmax(z, dim=1)).sum(dim=1)
    else:
        per_row = 0.5 * ((t - z) ** 2).sum(dim=1)
    if w is None:
        return per_row.mean()
    return (w * per_row).sum() / w.sum()


def torch_train(net, x, t, epochs, batch, make_optimizer, weight_decay=0.0, schedule=None,
                weights=None, layers=None, optimizer=None):
    layers = layers or torch_net(net)
    groups = [{"params": [la.weight for la in layers], "weight_decay": weight_decay},
              {"params": [la.bias for la in layers], "weight_decay": 0.0}]
    optimizer = optimizer or make_optimizer(groups)
    scheduler = schedule(optimizer) if schedule else None
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    wt = None if weights is None else torch.from_numpy(weights)
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            part = slice(start, start + batch)
            optimizer.zero_grad()
            torch_loss(layers, net.arch, xt[part], tt[part],
                       None if wt is None else wt[part]).backward()
            optimizer.step()
        if scheduler:
            scheduler.step()
    return layers, optimizer


def assert_same(net, params, layers, rtol=RTOL, atol=ATOL):
    for (w, b), layer in zip(net.layers(params), layers, strict=True):
        np.testing.assert_allclose(w, layer.weight.detach().numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(b, layer.bias.detach().numpy(), rtol=rtol, atol=atol)


def run(net, x, t, **options):
    options.setdefault("learning_rate", 0.05)
    return list(training.train(net, x, t, training.TrainOptions(**options)))[-1]


BATCH = 8
EPOCHS = STEPS // 3  # 24 rows in batches of 8: 3 steps an epoch

CASES = {
    "sgd": (dict(optimizer=Optimizer.SGD),
            lambda g: torch.optim.SGD(g, lr=0.05)),
    "sgd-momentum": (dict(optimizer=Optimizer.SGD, momentum=0.9),
                     lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9)),
    "sgd-nesterov-decay": (dict(optimizer=Optimizer.SGD, momentum=0.9, nesterov=True,
                                weight_decay=0.01),
                           lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9, nesterov=True)),
    "sgd-decay": (dict(optimizer=Optimizer.SGD, weight_decay=0.05),
                  lambda g: torch.optim.SGD(g, lr=0.05)),
    "adam": (dict(optimizer=Optimizer.ADAM),
             lambda g: torch.optim.Adam(g, lr=0.05)),
    "adam-decay-betas": (dict(optimizer=Optimizer.ADAM, weight_decay=0.01, beta1=0.8,
                              beta2=0.99, epsilon=1e-7),
                         lambda g: torch.optim.Adam(g, lr=0.05, betas=(0.8, 0.99), eps=1e-7)),
    "adamw": (dict(optimizer=Optimizer.ADAMW, weight_decay=0.1),
              lambda g: torch.optim.AdamW(g, lr=0.05)),
}


@pytest.mark.parametrize("case", CASES)
def test_each_optimizer_equals_torch_after_200_steps(case):
    options, make = CASES[case]
    net, x, t = problem()
    last = run(net, x, t, epochs=EPOCHS, batch_size=BATCH, **options)
    layers, _ = torch_train(net, x, t, EPOCHS, BATCH, make,
                            weight_decay=options.get("weight_decay", 0.0))
    assert_same(net, last.params, layers)
    assert not np.allclose(last.params, net.params)  # it did train


def test_adam_with_tiny_gradients_where_epsilon_matters():
    # Inputs of 1e-6 and MSE targets near the outputs: gradients about 1e-6, so sqrt(v_hat) is
    # of epsilon's order and leaving epsilon out (or adding it elsewhere) would show.
    net, x, t = problem(MSE_ARCH, scale=1e-6)
    t = net.predict(x) + 1e-6 * np.random.default_rng(3).normal(size=t.shape)
    options = dict(optimizer=Optimizer.ADAM, epsilon=1e-6, learning_rate=1e-3)
    last = run(net, x, t, epochs=EPOCHS, batch_size=BATCH, **options)
    layers, _ = torch_train(net, x, t, EPOCHS, BATCH,
                            lambda g: torch.optim.Adam(g, lr=1e-3, eps=1e-6))
    assert_same(net, last.params, layers)
    # With torch's default epsilon the weights differ by far more than the tolerance.
    other, _ = torch_train(net, x, t, EPOCHS, BATCH, lambda g: torch.optim.Adam(g, lr=1e-3))
    with pytest.raises(AssertionError):
        assert_same(net, last.params, other)


SCHEDULES = {
    "step": (Schedule(Kind.STEP, step_epochs=7, gamma=0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
    "cosine": (Schedule(Kind.COSINE, min_learning_rate=0.001),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS,
                                                                    eta_min=0.001)),
}


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAM])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_equal_torchs_schedulers(name, optimizer):
    schedule, make_scheduler = SCHEDULES[name]
    net, x, t = problem()
    extra = {"momentum": 0.9} if optimizer is Optimizer.SGD else {}
    last = run(net, x, t, epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer,
               schedule=schedule, **extra)
    torch_opt = ((lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9))
                 if optimizer is Optimizer.SGD else (lambda g: torch.optim.Adam(g, lr=0.05)))
    layers, torch_optimizer = torch_train(net, x, t, EPOCHS, BATCH, torch_opt,
                                          schedule=make_scheduler)
    assert_same(net, last.params, layers)
    # The last epoch's rate, as torch's scheduler had it during that epoch.
    expected = SCHEDULES[name][1](torch.optim.SGD([torch.zeros(1)], lr=0.05))
    for _ in range(EPOCHS - 1):
        expected.optimizer.step()
        expected.step()
    assert last.learning_rate == pytest.approx(expected.get_last_lr()[0], rel=1e-14)


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAM, Optimizer.ADAMW])
def test_two_calls_equal_one_call_of_both_lengths(optimizer):
    net, x, t = problem(seed=2)
    options = dict(batch_size=BATCH, optimizer=optimizer, weight_decay=0.01)
    if optimizer is Optimizer.SGD:
        options["momentum"] = 0.9
    once = run(net, x, t, epochs=20, **options)
    first = run(net, x, t, epochs=10, **options)
    middle = Network(net.arch, first.params)
    second = list(training.train(middle, x, t, training.TrainOptions(
        epochs=10, learning_rate=0.05, **options), state=first.optimizer))[-1]
    np.testing.assert_allclose(second.params, once.params, rtol=RTOL, atol=ATOL)
    assert second.optimizer.steps == once.optimizer.steps == 20 * 3
    for kept, single in zip(second.optimizer.arrays, once.optimizer.arrays, strict=True):
        np.testing.assert_allclose(kept, single, rtol=RTOL, atol=ATOL)


def test_another_optimizer_or_reset_starts_its_state_afresh():
    net, x, t = problem(seed=4)
    adam = run(net, x, t, epochs=5, batch_size=BATCH, optimizer=Optimizer.ADAM)
    assert adam.optimizer.optimizer is Optimizer.ADAM and adam.optimizer.steps == 15
    after = Network(net.arch, adam.params)
    fresh = run(after, x, t, epochs=3, batch_size=BATCH, momentum=0.9)
    switched = list(training.train(after, x, t, training.TrainOptions(
        epochs=3, learning_rate=0.05, batch_size=BATCH, momentum=0.9),
        state=adam.optimizer))[-1]
    # SGD after Adam: Adam's moments are not a velocity; SGD starts from zeros, as a fresh call.
    np.testing.assert_array_equal(switched.params, fresh.params)
    assert switched.optimizer.optimizer is Optimizer.SGD and switched.optimizer.steps == 9
    reset = list(training.train(after, x, t, training.TrainOptions(
        epochs=3, learning_rate=0.05, batch_size=BATCH, optimizer=Optimizer.ADAM,
        reset_optimizer=True), state=adam.optimizer))[-1]
    again = run(after, x, t, epochs=3, batch_size=BATCH, optimizer=Optimizer.ADAM)
    np.testing.assert_array_equal(reset.params, again.params)
    assert reset.optimizer.steps == 9


# ---------------------------------------------------------------------------------------------
# Sample weights.


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAM])
def test_integer_weights_equal_repeated_rows(optimizer):
    # One batch holding every row: the weighted mean gradient equals the mean over the rows
    # repeated, to rounding (the sums are taken in another order).
    net, x, t = problem(seed=5, n=12)
    w = np.random.default_rng(5).integers(1, 4, size=12).astype(float)
    weighted = list(training.train(net, x, t, training.TrainOptions(
        epochs=30, learning_rate=0.05, batch_size=12, optimizer=optimizer),
        sample_weights=w))[-1]
    repeated = run(net, np.repeat(x, w.astype(int), axis=0), np.repeat(t, w.astype(int), axis=0),
                   epochs=30, batch_size=int(w.sum()), optimizer=optimizer)
    np.testing.assert_allclose(weighted.params, repeated.params, rtol=RTOL, atol=ATOL)
    assert weighted.loss == pytest.approx(repeated.loss, rel=1e-12)


def test_zero_weights_equal_leaving_the_rows_out():
    net, x, t = problem(seed=6, n=12)
    w = np.ones(12)
    w[[1, 4, 9]] = 0.0
    weighted = list(training.train(net, x, t, training.TrainOptions(
        epochs=30, learning_rate=0.05, batch_size=12, optimizer=Optimizer.ADAM),
        sample_weights=w))[-1]
    kept = w > 0
    left_out = run(net, x[kept], t[kept], epochs=30, batch_size=12, optimizer=Optimizer.ADAM)
    np.testing.assert_allclose(weighted.params, left_out.params, rtol=RTOL, atol=ATOL)


def test_weighted_batches_equal_torchs_weighted_loss():
    net, x, t = problem(seed=7)
    w = np.random.default_rng(7).random(24) * 3
    last = list(training.train(net, x, t, training.TrainOptions(
        epochs=EPOCHS, learning_rate=0.05, batch_size=BATCH, optimizer=Optimizer.ADAM),
        sample_weights=w))[-1]
    layers, _ = torch_train(net, x, t, EPOCHS, BATCH, lambda g: torch.optim.Adam(g, lr=0.05),
                            weights=w)
    assert_same(net, last.params, layers)


# ---------------------------------------------------------------------------------------------
# Bad settings name their field, before any kernel runs.


@pytest.mark.parametrize("options, field", [
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(optimizer=Optimizer.ADAM, beta1=1.0), "beta1"),
    (dict(optimizer=Optimizer.ADAM, beta2=-0.1), "beta2"),
    (dict(optimizer=Optimizer.ADAM, epsilon=0.0), "epsilon"),
    (dict(beta1=0.9), "beta1"),
    (dict(nesterov=True), "nesterov"),
    (dict(optimizer=Optimizer.ADAM, momentum=0.9), "momentum"),
    (dict(optimizer=7), "optimizer"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(validation_fraction=-0.2), "validation_fraction"),
    (dict(schedule=lambda: Schedule(Kind.STEP)), "schedule.step_epochs"),
    (dict(schedule=lambda: Schedule(Kind.COSINE, gamma=0.5)), "schedule.gamma"),
    (dict(schedule=lambda: Schedule(Kind.STEP, step_epochs=2, gamma=1.5)), "schedule.gamma"),
    (dict(schedule=lambda: Schedule(Kind.COSINE, min_learning_rate=1.0)),
     "schedule.min_learning_rate"),
    (dict(early_stopping=lambda: training.EarlyStopping(patience=-1)),
     "early_stopping.patience"),
    (dict(early_stopping=lambda: training.EarlyStopping(min_delta=0.1)),
     "early_stopping.min_delta"),
])
def test_bad_options_name_the_field(options, field):
    # Schedule and EarlyStopping check themselves when made: made inside the raises.
    with pytest.raises(errors.InvalidArgument, match=field.replace(".", r"\.")):
        made = {k: v() if callable(v) else v for k, v in options.items()}
        training.TrainOptions(epochs=1, learning_rate=0.05, **made)


@pytest.mark.parametrize("kwargs, field", [
    (dict(sample_weights=np.ones(5)), "sample_weights"),
    (dict(sample_weights=-np.ones(24)), "sample_weights"),
    (dict(sample_weights=np.zeros(24)), "sample_weights"),
    (dict(validation=(np.zeros((3, 5)), np.zeros((3, 3)))), "validation_inputs"),
    (dict(validation=(np.zeros((3, 4)), np.zeros((2, 3)))), "validation_targets"),
])
def test_bad_arrays_name_the_field(kwargs, field):
    net, x, t = problem()
    with pytest.raises(errors.InvalidArgument, match=field):
        list(training.train(net, x, t, training.TrainOptions(epochs=1, learning_rate=0.05),
                            **kwargs))


def test_monitoring_validation_without_validation_data_is_refused():
    net, x, t = problem()
    stopping = training.EarlyStopping(patience=3, monitor=training.Monitor.VALIDATION_LOSS)
    with pytest.raises(errors.InvalidArgument, match="early_stopping.monitor"):
        list(training.train(net, x, t, training.TrainOptions(
            epochs=1, learning_rate=0.05, early_stopping=stopping)))
