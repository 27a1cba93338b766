"""min_version on the one-sample fast path (service/protocols/fastpath.py): answered when the
replica's version is new enough, left to the general path (which re-reads the store) when it is
older or when the model is not known here yet."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.engine.model import Architecture, Init, initial_parameters
from jitnet.service.errors import NotFound
from jitnet.service.protocols import fastpath
from jitnet.service.store import ModelRecord, frozen
from jitnet.v1 import jitnet_pb2 as pb

BIG = 1 << 30


def _record(version: int) -> ModelRecord:
    arch = Architecture((2, 4, 1))
    params = frozen(initial_parameters(arch, Init.HE, 0))
    return ModelRecord("m", arch, version, 0, 0, 0.0, 0, 0, params)


def _request(min_version: int, model_id: str = "m") -> pb.PredictRequest:
    x = np.array([[0.25, 0.5]])
    return pb.PredictRequest(model_id=model_id, min_version=min_version,
                             inputs=pb.Tensor(shape=x.shape, raw=x.astype("<f8").tobytes()))


@pytest.mark.parametrize("held, asked, answered", [
    (3, 0, True), (3, 1, True), (3, 3, True), (3, 4, False), (1, 2**63, False)])
def test_answers_only_a_version_at_least_min_version(held, asked, answered):
    record = _record(held)
    reply = fastpath.predict_reply(lambda _: record, _request(asked), BIG)
    assert (reply is not None) == answered
    if answered:
        assert pb.PredictResponse.FromString(reply).model_version == held


@pytest.mark.parametrize("min_version", [0, 1])
def test_an_unknown_model_goes_to_the_general_path(min_version):
    """With min_version it may have been made elsewhere a moment ago (the general path re-reads
    the store); without, the general path checks the request before it says NOT_FOUND."""
    def unknown(model_id):
        raise NotFound(f"model '{model_id}' not found")

    assert fastpath.predict_reply(unknown, _request(min_version, "new"), BIG) is None
