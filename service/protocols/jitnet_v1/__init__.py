"""jitnet.v1's NetworkService: its servicer, and its converter from protobuf to numpy and back."""
