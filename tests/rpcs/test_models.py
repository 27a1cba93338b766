"""CreateModel, GetModel, ListModels and DeleteModel through a real in-process server."""

from __future__ import annotations

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    ARTICLE_HIDDEN,
    ARTICLE_OUTPUT,
    TIMEOUT,
    C,
    array,
    article_request,
    code_of,
    create,
    tensor,
)


def test_create_defaults_seed_and_fresh_id(stub):
    first = stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[3, 5, 2]), seed=7), timeout=TIMEOUT).model
    assert first.id  # the server made one
    arch = first.architecture
    assert (arch.hidden_activation, arch.output_activation, arch.loss, arch.gradient_mode) == (
        pb.ACTIVATION_SIGMOID, pb.ACTIVATION_SIGMOID, pb.LOSS_MSE, pb.GRADIENT_MODE_EXACT)
    assert arch.HasField("bias") and arch.bias is True
    assert first.parameter_count == 3 * 5 + 5 + 5 * 2 + 2
    assert len(first.layers) == 2  # weights come back on create
    assert not array(first.layers[0].biases).any()  # Xavier starts biases at zero
    second = stub.CreateModel(pb.CreateModelRequest(
        model_id="again", architecture=pb.Architecture(layer_sizes=[3, 5, 2]), seed=7),
        timeout=TIMEOUT).model
    for a, b in zip(first.layers, second.layers, strict=True):  # same seed, same weights
        np.testing.assert_array_equal(array(a.weights), array(b.weights))
    uniform = stub.CreateModel(pb.CreateModelRequest(
        architecture=pb.Architecture(layer_sizes=[3, 5, 2]), init=pb.INIT_UNIFORM, seed=7),
        timeout=TIMEOUT).model
    w = array(uniform.layers[0].weights)
    assert (w >= 0).all() and (w < 1).all() and array(uniform.layers[0].biases).any()
    assert first.create_time.seconds > 1_600_000_000
    assert first.update_time == first.create_time


def test_get_model_with_and_without_weights_values_and_raw(stub):
    stub.CreateModel(article_request("m"), timeout=TIMEOUT)
    bare = stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model
    assert bare.id == "m" and not bare.layers and bare.version == 1
    created_raw = stub.CreateModel(pb.CreateModelRequest(
        model_id="r", architecture=pb.Architecture(layer_sizes=[2, 1]),
        layers=[pb.Layer(weights=tensor([[1.0, 2.0]], raw=True), biases=tensor([3.0]))]),
        timeout=TIMEOUT).model
    assert created_raw.layers[0].weights.raw and created_raw.layers[0].biases.raw
    values = stub.GetModel(pb.GetModelRequest(model_id="m", include_weights=True),
                           timeout=TIMEOUT).model
    raw = stub.GetModel(pb.GetModelRequest(model_id="m", include_weights=True, raw=True),
                        timeout=TIMEOUT).model
    assert values.layers[0].weights.values and not values.layers[0].weights.raw
    assert raw.layers[0].weights.raw and not raw.layers[0].weights.values
    assert not raw.layers[0].HasField("biases")  # the article's network has none
    np.testing.assert_array_equal(array(raw.layers[0].weights), ARTICLE_HIDDEN)
    np.testing.assert_array_equal(array(values.layers[1].weights), ARTICLE_OUTPUT)


def test_metadata_is_kept_and_the_optimizer_named_once_it_has_state(stub):
    created = stub.CreateModel(pb.CreateModelRequest(
        model_id="meta", architecture=pb.Architecture(layer_sizes=[2, 2, 1]),
        metadata={"classes": "[0, 1]", "source": "sklearn 1.9"}), timeout=TIMEOUT).model
    assert dict(created.metadata) == {"classes": "[0, 1]", "source": "sklearn 1.9"}
    assert created.optimizer == pb.OPTIMIZER_UNSPECIFIED  # no state yet
    stub.Step(pb.StepRequest(model_id="meta", input=[0, 1], target=[1], learning_rate=0.1),
              timeout=TIMEOUT)
    stepped = stub.GetModel(pb.GetModelRequest(model_id="meta"), timeout=TIMEOUT).model
    assert stepped.optimizer == pb.OPTIMIZER_UNSPECIFIED  # a Step keeps the state as it was
    for _ in stub.Train(pb.TrainRequest(model_id="meta", inputs=tensor([[0.0, 1.0]]),
                                        targets=tensor([[1.0]]), epochs=2, learning_rate=0.1,
                                        momentum=0.5), timeout=TIMEOUT):
        pass
    trained = stub.GetModel(pb.GetModelRequest(model_id="meta"), timeout=TIMEOUT).model
    assert trained.optimizer == pb.OPTIMIZER_SGD and trained.version == 3  # one commit, at the end
    assert dict(trained.metadata) == dict(created.metadata)  # kept by every commit
    listed = {m.id: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models}
    assert dict(listed["meta"].metadata) == dict(created.metadata)


def test_list_models_pages_in_id_order(stub):
    ids = [f"m{k:02d}" for k in range(7)]
    for model_id in reversed(ids):
        create(stub, model_id)
    seen, token, pages = [], "", 0
    while pages < 10:
        reply = stub.ListModels(pb.ListModelsRequest(page_size=3, page_token=token),
                                timeout=TIMEOUT)
        seen += [m.id for m in reply.models]
        assert all(not m.layers for m in reply.models)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3
    everything = stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT)  # default page 100
    assert [m.id for m in everything.models] == ids and not everything.next_page_token
    huge = stub.ListModels(pb.ListModelsRequest(page_size=5000), timeout=TIMEOUT)  # capped
    assert len(huge.models) == 7 and not huge.next_page_token
    assert code_of(lambda: stub.ListModels(pb.ListModelsRequest(page_token="garbage!"),
                                           timeout=TIMEOUT)) == C.INVALID_ARGUMENT


def test_delete_model(stub):
    create(stub, "gone")
    stub.DeleteModel(pb.DeleteModelRequest(model_id="gone"), timeout=TIMEOUT)
    assert code_of(lambda: stub.GetModel(pb.GetModelRequest(model_id="gone"),
                                         timeout=TIMEOUT)) == C.NOT_FOUND
    assert code_of(lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="gone"),
                                            timeout=TIMEOUT)) == C.NOT_FOUND
    create(stub, "gone")  # the id is free again, and starts over at version 1
    assert stub.GetModel(pb.GetModelRequest(model_id="gone"), timeout=TIMEOUT).model.version == 1

