"""The fast path for packed numbers: the encodings clients send, and malformed ones."""
