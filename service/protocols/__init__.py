"""What the port speaks: jitnet.v1, the inference protocol and health, over one entry.

Each protocol is a servicer and a converter (jitnet_v1/, inference/); they share the prediction
entry (prediction.py), the one-sample fast path (fastpath.py), the limits (limits.py) and the one
error table (status.py).
"""
