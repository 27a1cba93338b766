"""jitnet's server: the engine, the store, the protocols and the server around them.

One folder per room, from the ground up (each may import the rooms before it, never after;
tests/house checks it):

    config.py, errors.py, events.py   settings, domain errors, what the rooms report
    engine/          architectures, networks, training, numba kernels and their tiers (jit/)
    store/           committed versions of models: the interface, the file and PostgreSQL stores
    protocols/       what the port speaks: jitnet.v1, the inference protocol, health; one
                     prediction entry, one fast path, one error table
    observability/   metrics, the access log, traces, attached at the door
    server/          lifecycle, workers, warm-up, the call guard, the token
"""
