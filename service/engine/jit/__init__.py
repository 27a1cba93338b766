"""Kernels per architecture, in tiers: the compiler room.

    from jitnet.service.engine import jit
    kernels = jit.kernels_for(arch)        # never waits: tier 1 when loaded, else tier 0
    kernels.batch_epochs(...)              # the calls tiers.py lists, the same in both tiers

Tier 0 is kernels.py, generic in the number and sizes of layers and ready at once. Tier 1 is an
architecture's own kernels, generated from kernels.py's building blocks with its sizes,
activations, loss, bias and gradient mode as constants (template.py), compiled by a process of
its own into numba's on-disk cache (build.py, `python -m jitnet.service.engine.jit`) and swapped in
when loaded (room.py). The engine (model.py, training.py) and protocols/fastpath.py ask here;
neither the servicer nor the store knows that tiers exist. The server configures the room from
its settings (server/lifecycle.py); elsewhere it is OFF (tier 0) unless configured.

`room.generation` goes up whenever the answer of kernels_for may have changed: holders of
kernels compare it with the generation they bound at, and ask again when it moved.
"""

from .room import Mode, Room
from .tiers import GenericKernels, SpecialisedKernels

room = Room()


def kernels_for(arch, *, training: bool = False):
    """The kernels for `arch` now (never waits). A Train passes `training`: its first call
    for an architecture asks for tier 1, and it keeps what it got for the whole call."""
    return room.kernels(arch, training=training)


__all__ = ["GenericKernels", "Mode", "Room", "SpecialisedKernels", "kernels_for", "room"]
