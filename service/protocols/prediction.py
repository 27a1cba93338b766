"""The one prediction entry, for every protocol: limits, inputs, model lookup, predict, version.

A protocol's servicer reads its request's row count, hands over a function that decodes the
inputs (called once the row limit has passed, so nothing big is allocated before), and turns
the Prediction into its reply; everything between is here, in this order, so that every protocol
refuses the same request with the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..config import Limits
from ..errors import NotFound
from ..store import ModelRecord
from . import limits


class Prediction(NamedTuple):
    outputs: np.ndarray  # [rows, n_out]
    record: ModelRecord  # the committed version that answered

    @property
    def version(self) -> int:
        return self.record.version


def predict(get_record: Callable[[str, int], ModelRecord], limits_: Limits, model_id: str,
            rows: int, decode: Callable[[], np.ndarray], *, min_version: int = 0,
            version: int | None = None) -> Prediction:
    """Outputs of the model's newest committed version, at least `min_version` (0: any).
    `get_record` is the store's get_at_least (a replica holding an older version re-reads the
    store; FailedPrecondition names both versions when it has none that new); `decode` returns
    the inputs as a float64 [rows, n_in] (or [n_in]) array, raising InvalidArgument for a
    malformed tensor; the model checks their width and finiteness. `version`: when given, the
    caller asked for exactly that version (NotFound if it is not the one served)."""
    limits.check_rows(limits_, rows, "inputs")
    inputs = decode()
    record = get_record(model_id, min_version)
    require_version(record, version)
    rows = inputs.shape[0] if inputs.ndim == 2 else 1
    # Refused before the outputs are allocated, whatever the row limit allows.
    limits.check_outputs_reply(limits_, rows, record.arch.layer_sizes[-1])
    return Prediction(record.network.predict(inputs), record)


def require_version(record: ModelRecord, version: int | None) -> None:
    """A store serves each model's newest committed version only: a request for another one
    names a version that is not there."""
    if version is not None and version != record.version:
        raise NotFound(f"model '{record.id}' has no version {version} to serve: it serves its "
                       f"current version, {record.version} (leave the version empty for it)")
