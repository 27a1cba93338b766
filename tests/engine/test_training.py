"""training.train: epoch losses, batches, momentum, shuffling, early stop, progress, divergence,
cancellation, and option validation -- against naive.train where there is a number to match."""

import numpy as np
import pytest

from jitnet.service import errors
from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Loss, Network

from . import naive

pytestmark = pytest.mark.usefixtures("tier")  # both kernel tiers (conftest.py)

# Without JIT the kernels' overflow shows up as numpy RuntimeWarnings; here it is the subject.
OVERFLOW_IS_THE_POINT = pytest.mark.filterwarnings("ignore::RuntimeWarning")

ARCH = Architecture((3, 5, 2), Activation.TANH, Activation.SIGMOID, Loss.MSE)


def problem(seed=0, n=10, arch=ARCH):
    rng = np.random.default_rng(seed)
    layers = naive.random_layers(rng, arch.layer_sizes, arch.bias)
    x = rng.normal(size=(n, arch.layer_sizes[0]))
    t = naive.random_targets(rng, n, arch.layer_sizes[-1], arch)
    return Network.from_layers(arch, layers), layers, x, t


def run(net, x, t, **options):
    options.setdefault("learning_rate", 0.5)
    return list(training.train(net, x, t, training.TrainOptions(**options)))


def assert_params_match(net, params, ref_layers, rtol=1e-10):
    for (w, b), (rw, rb) in zip(net.layers(params), ref_layers, strict=True):
        np.testing.assert_allclose(w, rw, rtol=rtol, atol=1e-13)
        if b is not None:
            np.testing.assert_allclose(b, rb, rtol=rtol, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# What an epoch computes.


def test_epoch_loss_is_the_mean_of_the_per_sample_losses_seen():
    net, layers, x, t = problem()
    progress = run(net, x, t, epochs=4, report_every=1)
    # naive.train sums each sample's loss before that sample's update, then divides by n.
    _, _, ref_losses = naive.train(layers, x, t, net.arch, 4, 0.5)
    np.testing.assert_allclose([p.loss for p in progress], ref_losses, rtol=1e-12, atol=0)
    # ... which is not the loss of the weights at the end of the epoch (they moved since).
    end = naive.mean_loss(net.layers(progress[0].params), x, t, net.arch)
    assert abs(end - progress[0].loss) > 1e-6


@pytest.mark.parametrize("batch_size", [0, 1])
def test_batch_size_one_is_per_sample_updates(batch_size):
    net, layers, x, t = problem(1)
    (last,) = run(net, x, t, epochs=3, batch_size=batch_size)
    ref_layers, _, _ = naive.train(layers, x, t, net.arch, 3, 0.5, batch_size=1)
    assert_params_match(net, last.params, ref_layers)
    full_layers, _, _ = naive.train(layers, x, t, net.arch, 3, 0.5, batch_size=10)
    assert not np.allclose(net.layers(last.params)[0][0], full_layers[0][0], atol=1e-6)


def test_batch_uses_the_mean_gradient():
    net, layers, x, t = problem(2)
    (last,) = run(net, x, t, epochs=1, batch_size=10)
    ref = naive.backward(layers, x, t, net.arch)
    step = [(w + 0.5 * gw, b + 0.5 * gb)
            for (w, b), (gw, gb) in zip(layers, ref.descent, strict=True)]
    assert_params_match(net, last.params, step)
    # The mean, not the sum: the data set twice over in one batch makes the same update.
    (twice,) = run(net, np.vstack([x, x]), np.vstack([t, t]), epochs=1, batch_size=20)
    np.testing.assert_allclose(twice.params, last.params, rtol=1e-12)


def test_batch_larger_than_the_data_set_is_one_batch():
    net, _, x, t = problem(3)
    (whole,) = run(net, x, t, epochs=2, batch_size=10)
    (bigger,) = run(net, x, t, epochs=2, batch_size=64)
    np.testing.assert_allclose(bigger.params, whole.params, rtol=1e-13)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_momentum_matches_naive(batch_size):
    net, layers, x, t = problem(4)
    progress = run(net, x, t, epochs=5, batch_size=batch_size, momentum=0.9, learning_rate=0.1,
                   report_every=1)
    ref_layers, ref_velocity, ref_losses = naive.train(layers, x, t, net.arch, 5, 0.1,
                                                       batch_size, 0.9)
    np.testing.assert_allclose([p.loss for p in progress], ref_losses, rtol=1e-10)
    assert_params_match(net, progress[-1].params, ref_layers)
    assert_params_match(net, progress[-1].velocity, ref_velocity)
    # Momentum changes the path: without it the same run ends elsewhere.
    plain = run(net, x, t, epochs=5, batch_size=batch_size, learning_rate=0.1)[-1]
    assert not np.allclose(plain.params, progress[-1].params, atol=1e-6)


def test_momentum_continues_from_a_given_velocity():
    # Two calls of 3 epochs, the second given the first's params and velocity, are one call of 6.
    net, _, x, t = problem(5)
    options = dict(batch_size=4, momentum=0.8, learning_rate=0.1)
    (once,) = run(net, x, t, epochs=6, **options)
    (first,) = run(net, x, t, epochs=3, **options)
    second = list(training.train(Network(net.arch, first.params), x, t,
                                 training.TrainOptions(epochs=3, **options),
                                 velocity=first.velocity))[-1]
    np.testing.assert_allclose(second.params, once.params, rtol=1e-12)
    np.testing.assert_allclose(second.velocity, once.velocity, rtol=1e-12)


def test_velocity_follows_the_update_rule_with_momentum_zero():
    # v = m v + lr g holds for m = 0 too: after a momentum-0 call, v = lr g of its last batch.
    # The servicer stores the velocity between Train calls, so a stale one (the velocity the
    # call was given) would come back to life in the next call that uses momentum.
    net, layers, x, t = problem(15)
    (with_momentum,) = run(net, x, t, epochs=3, batch_size=4, momentum=0.9, learning_rate=0.1)
    given_velocity = naive.zeros_like_layers(layers)
    for (vw, vb), (w, b) in zip(given_velocity, net.layers(with_momentum.velocity), strict=True):
        vw[:], vb[:] = w, b
    after = list(training.train(Network(net.arch, with_momentum.params), x, t,
                                training.TrainOptions(epochs=2, learning_rate=0.1,
                                                      batch_size=4),
                                velocity=with_momentum.velocity))[-1]
    ref_layers, ref_velocity, _ = naive.train(net.layers(with_momentum.params), x, t, net.arch,
                                              2, 0.1, 4, 0.0, velocity=given_velocity)
    assert_params_match(net, after.params, ref_layers)
    assert_params_match(net, after.velocity, ref_velocity)


# ---------------------------------------------------------------------------------------------
# Shuffling.


def test_shuffle_is_deterministic_and_independent_of_chunking():
    net, _, x, t = problem(6)
    options = dict(epochs=40, shuffle=True, seed=11, batch_size=3, momentum=0.5)
    per_epoch = run(net, x, t, report_every=1, **options)
    whole = run(net, x, t, report_every=0, **options)  # the engine picks its own chunks
    odd = run(net, x, t, report_every=7, **options)
    assert len(per_epoch) == 40
    for other in (whole[-1], odd[-1]):
        np.testing.assert_array_equal(other.params, per_epoch[-1].params)
        assert other.loss == per_epoch[-1].loss
    np.testing.assert_array_equal(run(net, x, t, **options)[-1].params, whole[-1].params)


def test_shuffle_seeds_differ_and_shuffling_matters():
    net, _, x, t = problem(7)
    options = dict(epochs=3, shuffle=True, batch_size=1)
    a = run(net, x, t, seed=1, **options)[-1].params
    b = run(net, x, t, seed=2, **options)[-1].params
    stored = run(net, x, t, epochs=3, batch_size=1)[-1].params
    assert not np.allclose(a, b, atol=1e-9)
    assert not np.allclose(a, stored, atol=1e-9)


def test_shuffle_visits_every_sample_once_per_epoch():
    # With the whole data set in one batch the order cannot matter, provided each epoch is a
    # permutation (no sample repeated or skipped).
    net, _, x, t = problem(8)
    shuffled = run(net, x, t, epochs=5, batch_size=10, shuffle=True, seed=3)[-1]
    stored = run(net, x, t, epochs=5, batch_size=10)[-1]
    np.testing.assert_allclose(shuffled.params, stored.params, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Progress, early stopping.


@pytest.mark.parametrize("epochs,report_every,expected", [
    (10, 3, [3, 6, 9, 10]),
    (10, 5, [5, 10]),
    (4, 1, [1, 2, 3, 4]),
    (3, 10, [3]),
])
def test_report_every(epochs, report_every, expected):
    net, _, x, t = problem(9, n=6)
    progress = run(net, x, t, epochs=epochs, report_every=report_every)
    assert [p.epoch for p in progress] == expected
    assert [p.iterations for p in progress] == [6 * e for e in expected]
    assert [p.done for p in progress] == [False] * (len(expected) - 1) + [True]
    assert all(np.isfinite(p.loss) for p in progress)
    elapsed = [p.elapsed_seconds for p in progress]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.0


def test_progress_params_are_private_copies():
    net, _, x, t = problem(10)
    progress = run(net, x, t, epochs=3, report_every=1)
    assert not np.array_equal(progress[0].params, progress[1].params)
    again = run(net, x, t, epochs=3, report_every=1)
    progress[0].params[:] = 0.0  # a caller scribbling on what it kept changes nothing else
    np.testing.assert_array_equal(progress[2].params, again[2].params)


def test_report_every_zero_reports_at_least_at_the_end():
    net, _, x, t = problem(11)
    progress = run(net, x, t, epochs=25, report_every=0)
    assert progress[-1].done and progress[-1].epoch == 25
    assert progress[-1].iterations == 25 * 10


def test_target_loss_stops_early(xor):
    inputs, targets = xor
    net = Network.initialise(Architecture((2, 4, 1)), seed=0)
    history = run(net, inputs, targets, epochs=3000, report_every=1)
    losses = np.array([p.loss for p in history])
    target = float(losses[len(losses) // 3])
    first = int(np.argmax(losses <= target)) + 1  # the first epoch at or below the target
    progress = run(net, inputs, targets, epochs=3000, target_loss=target, report_every=1)
    assert progress[-1].done and progress[-1].epoch == first < 3000
    assert progress[-1].loss <= target
    assert all(p.loss > target and not p.done for p in progress[:-1])
    assert progress[-1].iterations == 4 * first


# ---------------------------------------------------------------------------------------------
# Divergence, cancellation, and the caller's network.


@OVERFLOW_IS_THE_POINT
def test_divergence_raises_and_yields_nothing_non_finite():
    # w' = w - lr (w x - 0) x with x = 1, lr = 3: w doubles in size each epoch and the loss
    # 0.5 w^2 overflows after about 512 epochs.
    arch = Architecture((1, 1), output_activation=Activation.LINEAR, bias=False)
    net = Network.from_layers(arch, [(np.array([[1.0]]), None)])
    seen = []
    with pytest.raises(errors.Diverged, match="learning") as caught:
        for progress in training.train(net, [[1.0]], [[0.0]],
                                       training.TrainOptions(epochs=2000, learning_rate=3.0,
                                                             report_every=1)):
            seen.append(progress)
    assert 400 < len(seen) < 600
    assert all(np.isfinite(p.loss) and np.isfinite(p.params).all() for p in seen)
    assert not any(p.done for p in seen)
    assert "learning_rate" in str(caught.value) or "learning rate" in str(caught.value)


@OVERFLOW_IS_THE_POINT
def test_huge_learning_rate_diverges_on_a_real_network(xor):
    inputs, targets = xor
    arch = Architecture((2, 4, 1), Activation.LINEAR, Activation.LINEAR)
    net = Network.initialise(arch, seed=1)
    with pytest.raises(errors.Diverged):
        for progress in training.train(net, inputs, targets,
                                       training.TrainOptions(epochs=1000, learning_rate=1e6)):
            assert np.isfinite(progress.params).all()


@OVERFLOW_IS_THE_POINT
def test_no_progress_carries_non_finite_params():
    # The loss of an iteration is computed before its update, so an update that overflows in
    # the last iteration of a run leaves a finite epoch loss over non-finite weights. Committing
    # them would break api.md: "the model stays at its last committed version, whose weights
    # are finite".
    arch = Architecture((1, 1), output_activation=Activation.LINEAR)
    net = Network.from_layers(arch, [(np.array([[1.0]]), np.array([0.0]))])
    with pytest.raises(errors.Diverged):
        for progress in training.train(net, [[1.0]], [[-10.0]],
                                       training.TrainOptions(epochs=1, learning_rate=1e308)):
            assert np.isfinite(progress.params).all(), (progress.loss, progress.params)


@OVERFLOW_IS_THE_POINT
def test_step_never_returns_non_finite_weights():
    # Same overflow through Step, whose result a non-dry Step commits.
    arch = Architecture((1, 1), output_activation=Activation.LINEAR)
    net = Network.from_layers(arch, [(np.array([[1.0]]), np.array([0.0]))])
    with pytest.raises((errors.Diverged, errors.InvalidArgument)):
        result = net.step([1.0], [-10.0], 1e308)
        assert np.isfinite(result.params).all(), result.params


def test_should_stop_cancels_before_the_first_chunk():
    net, _, x, t = problem(12)
    with pytest.raises(errors.Cancelled):
        run_gen = training.train(net, x, t, training.TrainOptions(epochs=5, learning_rate=0.1),
                                 should_stop=lambda: True)
        next(run_gen)


def test_should_stop_cancels_between_chunks():
    net, _, x, t = problem(13)
    stop = []
    gen = training.train(net, x, t, training.TrainOptions(epochs=50, learning_rate=0.1,
                                                          report_every=1),
                         should_stop=lambda: bool(stop))
    first = next(gen)
    assert first.epoch == 1 and not first.done
    stop.append(True)
    with pytest.raises(errors.Cancelled):
        next(gen)


def test_training_never_changes_the_callers_network():
    net, _, x, t = problem(14)
    before = net.params.copy()
    velocity = np.full_like(before, 0.01)
    kept = velocity.copy()
    list(training.train(net, x, t, training.TrainOptions(epochs=5, learning_rate=0.5,
                                                         momentum=0.5, shuffle=True),
                        velocity=velocity))
    net.step(x[0], t[0], 0.5)
    np.testing.assert_array_equal(net.params, before)
    np.testing.assert_array_equal(velocity, kept)


# ---------------------------------------------------------------------------------------------
# Options.


@pytest.mark.parametrize("options,field", [
    (dict(epochs=0), "epochs"),
    (dict(epochs=-3), "epochs"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-0.5), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(learning_rate=float("inf")), "learning_rate"),
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(momentum=float("nan")), "momentum"),
    (dict(target_loss=-1.0), "target_loss"),
    (dict(target_loss=float("nan")), "target_loss"),
    (dict(batch_size=-1), "batch_size"),
    (dict(report_every=-1), "report_every"),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()))
def test_train_options_are_validated(options, field):
    options = {"epochs": 1, "learning_rate": 0.1, **options}
    with pytest.raises(errors.InvalidArgument, match=field):
        training.TrainOptions(**options)
