"""The two kernel sets the engine can be given for an architecture; both answer the same calls.

    GenericKernels (tier 0)       kernels.py's kernels, generic in the number and sizes of
                                  layers: compiled once for every architecture, ready at once.
    SpecialisedKernels (tier 1)   the architecture's own one-sample kernels (template.py);
                                  batches go to the generic kernels (template.py says why).

What model.py, training.py and protocols/fastpath.py call, the arrays as kernels.py describes:

    sample_epochs(params, velocity, work, inputs, targets, orders, learning_rate, momentum,
                  target_loss, epoch_losses) -> epochs run
        plain SGD one sample at a time (kernels.sample_epochs)
    batch_epochs(params, state, steps, grad, work, inputs, targets, weights, orders,
                 batch_size, optimizer, hyper, target_loss, epoch_losses) -> epochs run
        every optimizer, any batch size (kernels.batch_epochs): the generic kernels at both tiers
    evaluate_rows(totals, inputs, targets, weights, params, work)
        loss and right answers on a set of rows (kernels.evaluate_rows), generic at both tiers
    step(params, velocity, grad, work, inputs, targets, learning_rate) -> loss
    predict_rows(outputs, inputs, params, work) -> inputs not finite        any rows
    predict_sample(outputs, x, params, work) -> inputs not finite
        x: one row [n_in], any 1-D float64 array (strided too), outputs [1, n_out]
    bind_predict_sample(outputs, inputs, params, work) -> run() -> inputs not finite
        the fast path's: buffers fixed once, inputs [1, n_in]; run() predicts what they hold.

The specialised kernels are compiled entry points called directly (no numba dispatcher typing on
each call), which do not check what they are given: the arrays must be float64 (orders int64),
C-contiguous (one sample's x excepted), with the dimensions above. The engine makes them so
before any kernel runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numba
import numpy as np

from .. import kernels

# Samples in their stored order (the kernels' `orders` with no columns).
_NO_ORDER = np.empty((0, 0), dtype=np.int64)


class GenericKernels:
    """Tier 0: kernels.py with this architecture's layout and kinds."""

    tier = 0

    def __init__(self, arch, on_predict: Callable[[], None] | None = None):
        self.arch = arch
        # Writable copies for Predict (numba takes longer to type a read-only array argument);
        # training and Step pass the architecture's own, as they always did (one compiled
        # variant each, the one warm-up compiles).
        self._layout, self._kinds = arch.layout.copy(), arch.kinds.copy()
        self._on_predict = on_predict  # the room counts tier-0 Predicts (its trigger)

    def sample_epochs(self, params, velocity, work, inputs, targets, orders, learning_rate,
                      momentum, target_loss, epoch_losses) -> int:
        epochs = kernels.sample_epochs_for(self.arch.layout)
        return epochs(params, velocity, work, self.arch.layout, self.arch.kinds, inputs,
                      targets, orders, learning_rate, momentum, target_loss, epoch_losses)

    def batch_epochs(self, params, state, steps, grad, work, inputs, targets, weights, orders,
                     batch_size, optimizer, hyper, target_loss, epoch_losses) -> int:
        return kernels.batch_epochs(params, state, steps, grad, work, self.arch.layout,
                                    self.arch.kinds, inputs, targets, weights, orders,
                                    batch_size, optimizer, hyper, target_loss, epoch_losses)

    def evaluate_rows(self, totals, inputs, targets, weights, params, work) -> None:
        kernels.evaluate_rows(totals, inputs, targets, weights, _NO_ORDER, params,
                              self.arch.layout, self.arch.kinds, work)

    def step(self, params, velocity, grad, work, inputs, targets, learning_rate) -> float:
        z, a, e, d, t, s = work
        return kernels.iteration(params, velocity, grad, z, a, e, d, t, s, self.arch.layout,
                                 self.arch.kinds, inputs, targets, _NO_ORDER, 0, 0, 1,
                                 learning_rate, 0.0)

    def predict_rows(self, outputs, inputs, params, work) -> int:
        if self._on_predict is not None:
            self._on_predict()
        return kernels.predict_rows(outputs, inputs, params, self._layout, self._kinds, work)

    def predict_sample(self, outputs, x, params, work) -> int:
        if self._on_predict is not None:
            self._on_predict()
        if not x.flags.c_contiguous:  # a strided array would be another type to compile for
            x = np.ascontiguousarray(x)
        return kernels.predict_rows(outputs, x[None], params, self._layout, self._kinds, work)

    def bind_predict_sample(self, outputs, inputs, params, work) -> Callable[[], int]:
        args = (outputs, inputs, params, self._layout, self._kinds, work)
        run = functools.partial(_compiled(kernels.predict_rows, args), *args)
        if self._on_predict is None:
            return run
        count = self._on_predict

        def counted() -> int:
            count()
            return run()
        return counted


class SpecialisedKernels:
    """Tier 1: the architecture's generated one-sample kernels, by entry point; batches go to
    `generic`. `entries` maps template.py's function names to what build.py loaded."""

    tier = 1

    def __init__(self, arch, entries: dict, generic: GenericKernels):
        self.arch = arch
        self._sample_epochs = entries["sample_epochs"]
        self._sample_step = entries["sample_step"]
        # The entry point itself, as an attribute: a one-sample Predict calls it with no Python
        # frame of ours in between.
        self.predict_sample = entries["predict_sample"]
        self._generic = generic
        # Batches and evaluation: the generic kernels (template.py says why).
        self.batch_epochs = generic.batch_epochs
        self.evaluate_rows = generic.evaluate_rows

    def sample_epochs(self, params, velocity, work, inputs, targets, orders, learning_rate,
                      momentum, target_loss, epoch_losses) -> int:
        _check(params, velocity, epoch_losses, ndim=1)
        _check(work, inputs, targets, ndim=2)
        _check(orders, ndim=2, dtype=np.int64)
        return self._sample_epochs(params, velocity, work, inputs, targets, orders,
                                   float(learning_rate), float(momentum), float(target_loss),
                                   epoch_losses)

    def step(self, params, velocity, grad, work, inputs, targets, learning_rate) -> float:
        _check(params, velocity, ndim=1)
        _check(work, inputs, targets, ndim=2)
        return self._sample_step(params, velocity, work, inputs, targets, float(learning_rate))

    def predict_rows(self, outputs, inputs, params, work) -> int:
        if inputs.shape[0] != 1:
            return self._generic.predict_rows(outputs, inputs, params, work)
        return self.predict_sample(outputs, inputs[0], params, work)

    def bind_predict_sample(self, outputs, inputs, params, work) -> Callable[[], int]:
        return functools.partial(self.predict_sample, outputs, inputs.reshape(-1), params, work)


def _check(*arrays, ndim: int, dtype=np.float64) -> None:
    """What a compiled entry point assumes of its arrays (and does not check itself)."""
    for array in arrays:
        if not (type(array) is np.ndarray and array.dtype == dtype and array.ndim == ndim
                and array.flags.c_contiguous):
            raise TypeError(f"a tier-1 kernel needs C-contiguous {np.dtype(dtype)} arrays of "
                            f"{ndim} dimensions, got {type(array).__name__} "
                            f"{getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}")


def _compiled(dispatcher, args: tuple) -> Callable[..., int]:
    """`dispatcher` compiled for exactly these arguments' types, as its compiled entry point:
    calling that skips numba's dispatcher, which types every argument on every call (about
    0.2 us of a one-sample Predict). The types never change, as the arrays are these.

    Asked once per model version and thread, so the answer is kept per kind of arguments:
    numba.typeof and Dispatcher.compile's lookup took about 0.2 ms together, a third of the
    first Predict of a new model (or version) in a server.

    numba internals: Dispatcher.compile(signature) compiles (or loads from the cache) and
    returns the entry point; tests/service/test_svc_fastpath.py checks this still holds."""
    if not hasattr(dispatcher, "compile"):  # NUMBA_DISABLE_JIT: a plain function
        return dispatcher
    kinds = (id(dispatcher), *((a.dtype.num, a.ndim, a.flags.c_contiguous, a.flags.writeable,
                                a.flags.aligned) for a in args))
    entry = _ENTRIES.get(kinds)
    if entry is None:
        entry = _ENTRIES[kinds] = dispatcher.compile(tuple(numba.typeof(a) for a in args))
    return entry


_ENTRIES: dict = {}  # argument kinds -> entry point (a handful: protocols/fastpath.py's types)
