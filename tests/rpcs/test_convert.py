"""convert: tensors both ways, enum defaults and unknown numbers, timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.engine.model import Activation, Architecture, GradientMode, Init, Loss
from jitnet.service.errors import InvalidArgument
from jitnet.service.protocols.jitnet_v1 import convert
from jitnet.v1 import jitnet_pb2 as pb


def test_tensor_round_trips_in_both_forms():
    array = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    for raw in (True, False):
        tensor = convert.from_array(array, raw)
        assert bool(tensor.raw) == raw and bool(tensor.values) != raw
        back = convert.to_array(tensor, "x")
        assert back.tobytes() == array.tobytes()
        # one array type for the kernels whichever form came in
        assert back.flags.writeable and back.flags.c_contiguous and back.dtype == np.float64


def test_raw_is_little_endian():
    tensor = pb.Tensor(shape=[1], raw=np.array([1.5], dtype=">f8").tobytes())
    with pytest.raises(AssertionError):
        assert convert.to_array(tensor, "x")[0] == 1.5
    tensor.raw = np.array([1.5], dtype="<f8").tobytes()
    assert convert.to_array(tensor, "x")[0] == 1.5


@pytest.mark.parametrize("tensor, words", [
    (pb.Tensor(shape=[2, 2], raw=b"\0" * 24), ["24 bytes", "32"]),
    (pb.Tensor(shape=[1000000000, 1000], raw=b"\0" * 8), ["8 bytes"]),  # checked before decoding
    (pb.Tensor(shape=[1], values=[1.0], raw=b"\0" * 8), ["both"]),
    (pb.Tensor(shape=[3], values=[1.0, 2.0]), ["2 numbers", "3"]),
    (pb.Tensor(shape=[0, 3], values=[1.0]), ["zero dimension"]),
    (pb.Tensor(values=[1.0]), ["shape"]),
])
def test_malformed_tensors(tensor, words):
    with pytest.raises(InvalidArgument) as info:
        convert.to_array(tensor, "inputs")
    assert "inputs" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_zero_dimension_tensor_carries_nothing():
    array = convert.to_array(pb.Tensor(shape=[0, 4]), "x")
    assert array.shape == (0, 4)
    tensor = convert.from_array(np.zeros((0, 2)), raw=True)
    assert list(tensor.shape) == [0, 2] and not tensor.raw and not tensor.values


def test_architecture_defaults_and_round_trip():
    arch = convert.architecture_from_proto(pb.Architecture(layer_sizes=[2, 3, 1]))
    assert arch == Architecture((2, 3, 1), Activation.SIGMOID, Activation.SIGMOID, Loss.MSE,
                                True, GradientMode.EXACT)
    assert convert.init_from_proto(0) == Init.XAVIER
    assert convert.init_from_proto(pb.INIT_UNIFORM) == Init.UNIFORM
    explicit = pb.Architecture(layer_sizes=[4, 2], hidden_activation=pb.ACTIVATION_RELU,
                               output_activation=pb.ACTIVATION_SOFTMAX,
                               loss=pb.LOSS_CROSS_ENTROPY, bias=False,
                               gradient_mode=pb.GRADIENT_MODE_ARTICLE)
    assert convert.architecture_to_proto(convert.architecture_from_proto(explicit)) == explicit


@pytest.mark.parametrize("field", ["hidden_activation", "output_activation", "loss",
                                   "gradient_mode"])
def test_unknown_enum_numbers_name_the_field(field):
    with pytest.raises(InvalidArgument, match=f"architecture.{field} is 42"):
        convert.architecture_from_proto(pb.Architecture(layer_sizes=[2, 1], **{field: 42}))


def test_timestamps():
    stamp = convert.timestamp(1_700_000_000_123_456_789)
    assert (stamp.seconds, stamp.nanos) == (1_700_000_000, 123_456_789)


def test_raw_rows_decode_as_a_view_only_for_readers():
    array = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    tensor = convert.from_array(array, raw=True)
    raw = tensor.raw
    view = convert.to_array(tensor, "x", raw, read_only=True)
    assert not view.flags.writeable and view.flags.aligned and view.flags.c_contiguous
    assert view.base is not None and bytes(view.base) == raw  # no copy of the data
    fresh = convert.to_array(tensor, "x", raw)
    assert fresh.flags.writeable
    assert view.tobytes() == fresh.tobytes() == array.tobytes()
