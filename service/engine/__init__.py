"""The engine: architectures, networks, training, the numba kernels and their tiers (jit/).

It knows arrays only: no gRPC, no disk, no database.
"""
