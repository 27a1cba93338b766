"""Validation (given rows or a held-out share), accuracy, early stopping and PLATEAU: training.train
on cases whose numbers are known in closed form, or against torch's ReduceLROnPlateau."""

import numpy as np
import pytest
import torch

from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Loss, Network
from jitnet.service.engine.optimizers import Optimizer
from jitnet.service.engine.schedules import Kind, Schedule

from .test_optimizers import ARCH, BATCH, assert_same, problem, torch_loss, torch_net

# One weight, no bias, a linear output: w x with x = 1. Trained toward t = 2 by SGD at rate 0.1,
# w_k = 2 - 2 * 0.9^k after epoch k (w += 0.1 (2 - w)); validated against t = 1, whose loss
# 0.5 (1 - w_k)^2 falls while w_k < 1 and rises after: |1 - w_k| is 0.063 at k = 6, 0.043 at 7,
# 0.139 at 8, so epoch 7 is the best and patience 3 stops after epoch 10.
LINE = Architecture((1, 1), output_activation=Activation.LINEAR, loss=Loss.MSE, bias=False)
BEST = 7


def w_after(k):
    return 2.0 - 2.0 * 0.9 ** k


def line_train(epochs=30, **stopping):
    net = Network.from_layers(LINE, [(np.array([[0.0]]), None)])
    options = training.TrainOptions(epochs=epochs, learning_rate=0.1,
                                    early_stopping=training.EarlyStopping(**stopping))
    return net, list(training.train(net, [[1.0]], [[2.0]], options,
                                    validation=([[1.0]], [[1.0]])))


def test_early_stopping_stops_at_patience_and_keeps_the_best_epoch():
    net, progress = line_train(patience=3)
    last = progress[-1]
    assert last.done and last.epoch == BEST + 3
    assert last.stop_reason is training.StopReason.EARLY_STOPPING
    assert last.best_epoch == BEST
    assert last.params[0] == pytest.approx(w_after(BEST), rel=1e-14)
    kept = Network(LINE, last.params)
    assert kept.predict([[1.0]])[0, 0] == pytest.approx(w_after(BEST), rel=1e-14)
    # The validation loss reported is the last epoch's, of the weights at its end.
    assert last.validation_loss == pytest.approx(0.5 * (1.0 - w_after(BEST + 3)) ** 2, rel=1e-12)
    # ... and the loss kept with the weights is that of the epoch they come from.
    assert last.params_loss == pytest.approx(0.5 * (2.0 - w_after(BEST - 1)) ** 2, rel=1e-12)


def test_without_restore_best_the_last_epoch_is_kept():
    _, progress = line_train(patience=3, restore_best=False)
    last = progress[-1]
    assert last.epoch == BEST + 3 and last.best_epoch == BEST
    assert last.params[0] == pytest.approx(w_after(BEST + 3), rel=1e-14)


def test_the_best_epoch_is_kept_when_every_epoch_ran():
    _, progress = line_train(epochs=BEST + 2, patience=5)
    last = progress[-1]
    assert last.stop_reason is training.StopReason.EPOCHS and last.epoch == BEST + 2
    assert last.best_epoch == BEST
    assert last.params[0] == pytest.approx(w_after(BEST), rel=1e-14)


def test_min_delta_counts_only_larger_improvements():
    # Improvements of |1 - w| shrink by 10% an epoch before the turn; from epoch 5 on, each
    # epoch's validation-loss gain is below 0.01, so with min_delta 0.01 the best is earlier.
    _, progress = line_train(patience=2, min_delta=0.01)
    gains = [0.5 * (1 - w_after(k - 1)) ** 2 - 0.5 * (1 - w_after(k)) ** 2 for k in range(1, 9)]
    first_small = next(k for k, g in enumerate(gains, start=1) if g <= 0.01)
    assert progress[-1].best_epoch == first_small - 1
    assert progress[-1].epoch == first_small + 1


# ---------------------------------------------------------------------------------------------
# validation_fraction.


def classes(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [30, 20, 10])
    rng.shuffle(labels)
    return rng.normal(size=(n, 4)), np.eye(3)[labels], labels


def test_the_held_out_rows_are_seeded_and_stratified():
    _, t, labels = classes()
    kept, held = training.holdout(t, 0.25, 3, ARCH)
    again_kept, again_held = training.holdout(t, 0.25, 3, ARCH)
    np.testing.assert_array_equal(held, again_held)
    np.testing.assert_array_equal(kept, again_kept)
    assert not np.array_equal(held, training.holdout(t, 0.25, 4, ARCH)[1])
    assert len(held) == 15 and np.intersect1d(kept, held).size == 0
    assert len(kept) + len(held) == 60
    for c, count in zip([0, 1, 2], [30, 20, 10], strict=True):
        share = 15 * count / 60  # 7.5, 5, 2.5 of the 15 held-out rows
        assert abs(np.sum(labels[held] == c) - share) < 1.0


def test_held_out_rows_are_never_trained_on():
    _, t, _ = classes()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    net = Network.initialise(ARCH, seed=1)
    options = dict(epochs=5, learning_rate=0.05, batch_size=BATCH, optimizer=Optimizer.ADAM,
                   shuffle=True, seed=9)
    with_holdout = list(training.train(net, x, t, training.TrainOptions(
        validation_fraction=0.25, **options)))[-1]
    kept, held = training.holdout(t, 0.25, 9, ARCH)
    alone = list(training.train(net, x[kept], t[kept], training.TrainOptions(**options)))[-1]
    np.testing.assert_array_equal(with_holdout.params, alone.params)
    # Validation loss and accuracy are of the held-out rows at the end weights.
    end = Network(ARCH, with_holdout.params)
    y = end.predict(x[held])
    loss = -np.mean(np.sum(t[held] * np.log(y), axis=1))
    assert with_holdout.validation_loss == pytest.approx(loss, rel=1e-12)
    right = np.argmax(y, axis=1) == np.argmax(t[held], axis=1)
    assert with_holdout.validation_accuracy == pytest.approx(right.mean(), abs=1e-15)
    train_right = np.argmax(end.predict(x[kept]), axis=1) == np.argmax(t[kept], axis=1)
    assert with_holdout.accuracy == pytest.approx(train_right.mean(), abs=1e-15)


def test_a_model_without_classes_reports_no_accuracy():
    _, progress = line_train(patience=3)
    assert progress[-1].accuracy is None and progress[-1].validation_accuracy is None


# ---------------------------------------------------------------------------------------------
# PLATEAU against torch's ReduceLROnPlateau on the training loss.


def test_plateau_equals_torchs_reduce_lr_on_plateau():
    net, x, t = problem(seed=8)
    epochs = 60
    schedule = Schedule(Kind.PLATEAU, gamma=0.5, patience=1)
    progress = list(training.train(net, x, t, training.TrainOptions(
        epochs=epochs, learning_rate=0.5, batch_size=BATCH, optimizer=Optimizer.ADAM,
        schedule=schedule, report_every=1)))
    layers = torch_net(net)
    params = [p for la in layers for p in (la.weight, la.bias)]
    optimizer = torch.optim.Adam(params, lr=0.5)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        total = 0.0
        for start in range(0, len(x), BATCH):
            part = slice(start, start + BATCH)
            optimizer.zero_grad()
            loss = torch_loss(layers, net.arch, xt[part], tt[part])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xt[part])  # the epoch's loss: the rows' mean
        plateau.step(total / len(x))
    assert [p.learning_rate for p in progress] == pytest.approx(rates, rel=1e-14)
    assert rates[-1] < rates[0]  # the rate did come down
    # At rate 0.5, ten times test_optimizers' 0.05, each step carries ten times the rounding
    # into the weights (Adam's step is lr * m / sqrt(v)): 1e-12 becomes 1e-11; the high rate
    # keeps the descent from contracting those errors, hence one more factor of 10.
    assert_same(net, progress[-1].params, layers, rtol=1e-10, atol=1e-10)
