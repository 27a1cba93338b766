"""jitnet's server side: numba kernels, the model and training engine, the model store and the
gRPC service.

Each arrow points one way (docs/architecture.md):
    server (lifecycle) -> guard -> servicer -> convert -> prediction / fastpath -> model -> kernels
                                      |          status (the one error table)    training
                                      +-> store (interface) <- file_store (the only code on disk)
                                                            <- postgres_store (the only SQL)
Two protocols, one port: servicer + convert (jitnet.v1) and inference_servicer +
inference_convert (the Open Inference Protocol), over the same prediction entry and error table.
"""
