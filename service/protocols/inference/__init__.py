"""The Open Inference Protocol (KServe V2): its servicer, and its converter, as jitnet.v1's."""
