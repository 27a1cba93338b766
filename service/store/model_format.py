"""The stored form of one model version, shared by every store: the file store writes it as a
file, the PostgreSQL store as one bytea value. So a version reads back the same, checksum and
all, wherever it was kept, and an unreadable one is refused for the same reasons.

Format version 2 (all numbers little-endian):

    magic "JITNETM\\0" (8 bytes) | format version u32 | metadata length u32 | parameter count u64
        | item size u32 (8: float64, 4: float32) | optimizer state arrays u32
    metadata: UTF-8 JSON (id, architecture with its dtype, version, epochs_trained, iterations,
              last_loss, create_time_ns, update_time_ns, optimizer (its name or null),
              optimizer_steps, metadata: the creator's strings), space-padded to a multiple of 8
    params:   parameter count x item size, the engine's flat buffer in the model's dtype
    state:    for each optimizer state array (optimizers.STATE_ARRAYS), parameter count x item
              size
    sha256 of everything above (32 bytes)

Version 1, written before the turn-3 optimizers and dtypes, still reads: a header without the
last two fields, float64 parameters, then SGD's velocity (parameter count x float64), the
sha256; its optimizer state is SGD's with that velocity, its metadata empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from typing import BinaryIO

import numpy as np

from ..engine.model import Activation, Architecture, Dtype, GradientMode, Loss
from ..engine.optimizers import NO_STATE, STATE_ARRAYS, Optimizer, OptimizerState
from ..errors import InvalidArgument
from .base import ModelRecord, frozen, frozen_metadata

MAGIC = b"JITNETM\x00"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_V1 = struct.Struct("<8sIIQ")  # magic, format version, metadata length, parameter count
HEADER = struct.Struct("<8sIIQII")  # ... then item size and optimizer state arrays
DIGEST_SIZE = 32  # sha256
_ITEM_DTYPES = {8: np.dtype("<f8"), 4: np.dtype("<f4")}


class Unreadable(Exception):
    """A stored version cannot be read; the message says why, for a person to act on."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the parts of a stored version are, from its header."""

    version: int
    header_size: int
    meta_len: int
    count: int  # parameters
    dtype: np.dtype  # of the parameters and the state arrays
    state_arrays: int

    @property
    def total(self) -> int:
        return (self.header_size + self.meta_len
                + (1 + self.state_arrays) * self.count * self.dtype.itemsize + DIGEST_SIZE)


def parts(record: ModelRecord) -> list:
    """The encoded version as buffers to write one after another (no copy of the arrays)."""
    dtype = record.arch.dtype.numpy.newbyteorder("<")
    meta = _metadata(record)
    arrays = [np.ascontiguousarray(a, dtype=dtype).view(np.uint8)
              for a in (record.params, *record.optimizer.arrays)]
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(meta), record.params.size, dtype.itemsize,
                         len(record.optimizer.arrays))
    digest = hashlib.sha256()
    out = [header, meta, *arrays]
    for part in out:
        digest.update(part)
    out.append(digest.digest())
    return out


def encode(record: ModelRecord) -> bytes:
    """The encoded version as one bytes object."""
    return b"".join(memoryview(p).cast("B") for p in parts(record))


def layout(header: bytes, total: int) -> Layout:
    """The layout a header gives, checked against the stored size. `header` holds at least
    HEADER.size bytes where the stored version has them (fewer only in a truncated one)."""
    if len(header) < HEADER_V1.size:
        raise Unreadable(f"truncated: {len(header)} bytes, shorter than the header")
    magic, version, meta_len, count = HEADER_V1.unpack(header[:HEADER_V1.size])
    if magic != MAGIC:
        raise Unreadable("not a jitnet model file (wrong magic bytes)")
    if version not in READABLE_VERSIONS:
        raise Unreadable(f"format version {version}; this server reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version == 1:
        found = Layout(1, HEADER_V1.size, meta_len, count, _ITEM_DTYPES[8], 1)
    else:
        if len(header) < HEADER.size:
            raise Unreadable(f"truncated: {len(header)} bytes, shorter than the header")
        item_size, state_arrays = HEADER.unpack(header[:HEADER.size])[4:]
        if item_size not in _ITEM_DTYPES:
            raise Unreadable(f"item size {item_size}; a model's numbers are 8 (float64) or 4 "
                             "(float32) bytes")
        if state_arrays > max(map(len, STATE_ARRAYS.values())):
            raise Unreadable(f"{state_arrays} optimizer state arrays; no optimizer keeps that "
                             "many")
        found = Layout(2, HEADER.size, meta_len, count, _ITEM_DTYPES[item_size], state_arrays)
    if total != found.total:
        raise Unreadable(f"{'truncated' if total < found.total else 'too long'}: {total} bytes, "
                         f"its header says {found.total}")
    return found


def read(f: BinaryIO, total: int, model_id: str) -> ModelRecord:
    """A version from a file of `total` bytes, read straight into its arrays."""
    header = f.read(HEADER.size)
    where = layout(header, total)
    f.seek(where.header_size)
    header = header[:where.header_size]
    meta = f.read(where.meta_len)
    arrays = [np.empty(where.count, dtype=where.dtype) for _ in range(1 + where.state_arrays)]
    if len(meta) != where.meta_len or any(f.readinto(a) != a.nbytes for a in arrays):
        raise Unreadable("truncated while reading")
    return record_of(where, header, meta, arrays, f.read(DIGEST_SIZE), model_id)


def decode(data, model_id: str) -> ModelRecord:
    """A version from one buffer (bytes, memoryview); Unreadable says why it cannot be read."""
    view = memoryview(data).cast("B")
    where = layout(bytes(view[:HEADER.size]), len(view))
    at = where.header_size
    meta = view[at:at + where.meta_len]
    at += where.meta_len
    arrays = []
    for _ in range(1 + where.state_arrays):
        arrays.append(np.frombuffer(view, dtype=where.dtype, count=where.count, offset=at).copy())
        at += where.count * where.dtype.itemsize
    return record_of(where, bytes(view[:where.header_size]), meta, arrays, view[at:], model_id)


def record_of(where: Layout, header: bytes, meta: bytes, arrays: list[np.ndarray],
              stored_digest: bytes, model_id: str) -> ModelRecord:
    """Checks the digest and the metadata of a read version and builds its record. Takes
    ownership of the arrays (the parameters, then the optimizer state's)."""
    digest = hashlib.sha256()
    for part in (header, meta, *(a.view(np.uint8) for a in arrays)):
        digest.update(part)
    if digest.digest() != bytes(stored_digest):
        raise Unreadable("checksum mismatch: the stored model is corrupt")
    native = [a.astype(a.dtype.newbyteorder("="), copy=False) for a in arrays]
    try:
        fields = json.loads(bytes(meta).decode())
        spec = fields["architecture"]
        arch = Architecture(
            tuple(spec["layer_sizes"]), Activation[spec["hidden_activation"]],
            Activation[spec["output_activation"]], Loss[spec["loss"]], bool(spec["bias"]),
            GradientMode[spec["gradient_mode"]], Dtype[spec.get("dtype", "FLOAT64")])
        if arch.dtype.numpy != native[0].dtype:
            raise ValueError(f"{arch.dtype.name} architecture, {native[0].dtype} numbers")
        params, state_arrays = frozen(native[0], arch.dtype.numpy), native[1:]
        if where.version == 1:
            state = OptimizerState.sgd(frozen(state_arrays[0]))
            metadata = {}
        else:
            name = fields["optimizer"]
            state = (NO_STATE if name is None else OptimizerState(
                Optimizer[name], tuple(frozen(a, arch.dtype.numpy) for a in state_arrays),
                int(fields["optimizer_steps"])))
            metadata = {str(k): str(v) for k, v in fields["metadata"].items()}
        record = ModelRecord(
            str(fields["id"]), arch, int(fields["version"]), int(fields["epochs_trained"]),
            int(fields["iterations"]), float(fields["last_loss"]),
            int(fields["create_time_ns"]), int(fields["update_time_ns"]), params, state,
            frozen_metadata(metadata))
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
        raise Unreadable(f"bad metadata: {exc}") from None
    if record.id != model_id:
        raise Unreadable(f"it holds model '{record.id}', not '{model_id}'")
    if arch.n_params != params.size:
        raise Unreadable(f"{params.size} parameters stored, the architecture has {arch.n_params}")
    return record


def _metadata(record: ModelRecord) -> bytes:
    arch, state = record.arch, record.optimizer
    meta = {
        "id": record.id,
        "architecture": {
            "layer_sizes": list(arch.layer_sizes),
            "hidden_activation": arch.hidden_activation.name,
            "output_activation": arch.output_activation.name,
            "loss": arch.loss.name,
            "bias": arch.bias,
            "gradient_mode": arch.gradient_mode.name,
            "dtype": arch.dtype.name,
        },
        "version": record.version,
        "epochs_trained": record.epochs_trained,
        "iterations": record.iterations,
        "last_loss": record.last_loss,
        "create_time_ns": record.create_time_ns,
        "update_time_ns": record.update_time_ns,
        "optimizer": None if state.optimizer is None else state.optimizer.name,
        "optimizer_steps": state.steps,
        "metadata": dict(record.metadata),
    }
    text = json.dumps(meta, sort_keys=True).encode()
    return text + b" " * (-len(text) % 8)
