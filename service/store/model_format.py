"""The stored form of one model version, shared by every store: the file store writes it as a
file, the PostgreSQL store as one bytea value. So a version reads back the same, checksum and
all, wherever it was kept, and an unreadable one is refused for the same reasons.

Format version 1 (all numbers little-endian):

    magic "JITNETM\\0" (8 bytes) | format version u32 | metadata length u32 | parameter count u64
    metadata: UTF-8 JSON (id, architecture, version, epochs_trained, iterations, last_loss,
              create_time_ns, update_time_ns), space-padded to a multiple of 8 bytes
    params:   parameter count x float64, the engine's flat buffer
    velocity: parameter count x float64, the SGD momentum state
    sha256 of everything above (32 bytes)
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from ..engine.model import Activation, Architecture, GradientMode, Loss
from ..errors import InvalidArgument
from .base import ModelRecord, frozen

MAGIC = b"JITNETM\x00"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ")  # magic, format version, metadata length, parameter count
DIGEST_SIZE = 32  # sha256
_F8 = np.dtype("<f8")


class Unreadable(Exception):
    """A stored version cannot be read; the message says why, for a person to act on."""


def parts(record: ModelRecord) -> list:
    """The encoded version as buffers to write one after another (no copy of the arrays)."""
    meta = _metadata(record)
    params = np.ascontiguousarray(record.params, dtype=_F8).view(np.uint8)
    velocity = np.ascontiguousarray(record.velocity, dtype=_F8).view(np.uint8)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(meta), record.params.size)
    digest = hashlib.sha256()
    out = [header, meta, params, velocity]
    for part in out:
        digest.update(part)
    out.append(digest.digest())
    return out


def encode(record: ModelRecord) -> bytes:
    """The encoded version as one bytes object."""
    return b"".join(memoryview(p).cast("B") for p in parts(record))


def sizes(header: bytes, total: int) -> tuple[int, int]:
    """(metadata length, parameter count) from a header, checked against the stored size."""
    if len(header) < HEADER.size:
        raise Unreadable(f"truncated: {len(header)} bytes, shorter than the header")
    magic, version, meta_len, count = HEADER.unpack(header[:HEADER.size])
    if magic != MAGIC:
        raise Unreadable("not a jitnet model file (wrong magic bytes)")
    if version != FORMAT_VERSION:
        raise Unreadable(f"format version {version}; this server reads version {FORMAT_VERSION}")
    expected = HEADER.size + meta_len + 16 * count + DIGEST_SIZE
    if total != expected:
        raise Unreadable(f"{'truncated' if total < expected else 'too long'}: {total} bytes, "
                         f"its header says {expected}")
    return meta_len, count


def record_of(header: bytes, meta: bytes, params: np.ndarray, velocity: np.ndarray,
              stored_digest: bytes, model_id: str) -> ModelRecord:
    """Checks the digest and the metadata of a read version and builds its record. Takes
    ownership of the float64 arrays `params` and `velocity`."""
    digest = hashlib.sha256()
    for part in (header, meta, params.view(np.uint8), velocity.view(np.uint8)):
        digest.update(part)
    if digest.digest() != bytes(stored_digest):
        raise Unreadable("checksum mismatch: the stored model is corrupt")
    try:
        fields = json.loads(bytes(meta).decode())
        spec = fields["architecture"]
        arch = Architecture(
            tuple(spec["layer_sizes"]), Activation[spec["hidden_activation"]],
            Activation[spec["output_activation"]], Loss[spec["loss"]], bool(spec["bias"]),
            GradientMode[spec["gradient_mode"]])
        record = ModelRecord(
            str(fields["id"]), arch, int(fields["version"]), int(fields["epochs_trained"]),
            int(fields["iterations"]), float(fields["last_loss"]),
            int(fields["create_time_ns"]), int(fields["update_time_ns"]),
            frozen(params.astype(np.float64, copy=False)),
            frozen(velocity.astype(np.float64, copy=False)))
    except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
        raise Unreadable(f"bad metadata: {exc}") from None
    if record.id != model_id:
        raise Unreadable(f"it holds model '{record.id}', not '{model_id}'")
    if arch.n_params != params.size:
        raise Unreadable(f"{params.size} parameters stored, the architecture has {arch.n_params}")
    return record


def decode(data, model_id: str) -> ModelRecord:
    """A version from one buffer (bytes, memoryview); Unreadable says why it cannot be read."""
    view = memoryview(data).cast("B")
    meta_len, count = sizes(bytes(view[:HEADER.size]), len(view))
    at = HEADER.size
    meta = view[at:at + meta_len]
    at += meta_len
    params = np.frombuffer(view, dtype=_F8, count=count, offset=at).copy()
    at += 8 * count
    velocity = np.frombuffer(view, dtype=_F8, count=count, offset=at).copy()
    at += 8 * count
    return record_of(bytes(view[:HEADER.size]), meta, params, velocity, view[at:], model_id)


def _metadata(record: ModelRecord) -> bytes:
    arch = record.arch
    meta = {
        "id": record.id,
        "architecture": {
            "layer_sizes": list(arch.layer_sizes),
            "hidden_activation": arch.hidden_activation.name,
            "output_activation": arch.output_activation.name,
            "loss": arch.loss.name,
            "bias": arch.bias,
            "gradient_mode": arch.gradient_mode.name,
        },
        "version": record.version,
        "epochs_trained": record.epochs_trained,
        "iterations": record.iterations,
        "last_loss": record.last_loss,
        "create_time_ns": record.create_time_ns,
        "update_time_ns": record.update_time_ns,
    }
    text = json.dumps(meta, sort_keys=True).encode()
    return text + b" " * (-len(text) % 8)
