"""jitnet's server side: numba kernels, the model and training engine, the store and the gRPC service.

Layers, each importing only those below it:
    servicer/server -> convert -> model, training -> kernels
                    -> store (the only code that touches disk)
"""
