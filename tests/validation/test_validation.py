"""Every field of every RPC, malformed: INVALID_ARGUMENT with a message naming the field, and
nothing stored changes. One table, one row per (RPC, field, way of being wrong)."""

from __future__ import annotations

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import RPCS, SERVICE, STREAMING, TIMEOUT, C, create, error_of, tensor
from tests.support.stored import fingerprint

NAN, INF = float("nan"), float("inf")
X = [[0.0, 1.0], [1.0, 0.0]]  # model "m" is 2-4-1 with biases
Y = [[1.0], [1.0]]


def _both(rows) -> pb.Tensor:
    t = tensor(rows)
    t.raw = np.asarray(rows, dtype="<f8").tobytes()
    return t


def _arch(**fields) -> pb.Architecture:
    fields.setdefault("layer_sizes", [2, 3, 1])
    return pb.Architecture(**fields)


def _layers(w0=None, b0=None, w1=None, b1=None, drop=()) -> list[pb.Layer]:
    """Explicit weights for a 2-3-1 model with biases; pieces replaced or dropped."""
    w0 = tensor(np.full((3, 2), 0.1)) if w0 is None else w0
    b0 = tensor(np.zeros(3)) if b0 is None else b0
    w1 = tensor(np.full((1, 3), 0.1)) if w1 is None else w1
    b1 = tensor(np.zeros(1)) if b1 is None else b1
    first = pb.Layer(weights=w0, biases=b0)
    second = pb.Layer(weights=w1, biases=b1)
    for name in drop:
        layer, field = name.split(".")
        (first if layer == "0" else second).ClearField(field)
    return [first, second]


BAD_IDS = ["", ".hidden", "a" * 129, "a/b", "../etc/passwd", "sp ace", "é", "nul\0", "tab\t",
           "-" * 129]


def test_the_longest_valid_id_and_every_character_allowed_are_accepted(stub):
    model_id = "A-z_0." + "x" * 122
    assert len(model_id) == 128 and create(stub, model_id).id == model_id


def _train(**fields) -> pb.TrainRequest:
    base = dict(model_id="m", inputs=tensor(X, raw=True), targets=tensor(Y, raw=True), epochs=1,
                learning_rate=0.1)
    base.update(fields)
    return pb.TrainRequest(**base)


def _step(**fields) -> pb.StepRequest:
    base = dict(model_id="m", input=[0.0, 1.0], target=[1.0], learning_rate=0.1)
    base.update(fields)
    return pb.StepRequest(**base)


def _cases():
    """(rpc, request, words the message must contain)."""
    cases = []
    def add(rpc, request, *words):
        return cases.append((rpc, request, words))

    # -- model ids, everywhere one is taken (CreateModel makes one when it is empty)
    for bad in BAD_IDS:
        if bad:
            add("CreateModel", pb.CreateModelRequest(model_id=bad, architecture=_arch()),
                "model_id", "model id")
        add("GetModel", pb.GetModelRequest(model_id=bad), "model_id", "model id")
        add("DeleteModel", pb.DeleteModelRequest(model_id=bad), "model_id", "model id")
        add("Train", _train(model_id=bad), "model_id", "model id")
        add("Step", _step(model_id=bad), "model_id", "model id")
        add("Step", _step(model_id=bad, dry_run=True), "model_id", "model id")
        add("Predict", pb.PredictRequest(model_id=bad, inputs=tensor(X)), "model_id",
            "model id")

    # -- CreateModel: the architecture
    def create_(**f):
        return pb.CreateModelRequest(model_id="new", **f)
    add("CreateModel", create_(), "layer_sizes")  # no architecture at all
    add("CreateModel", create_(architecture=_arch(layer_sizes=[])), "layer_sizes")
    add("CreateModel", create_(architecture=_arch(layer_sizes=[3])), "layer_sizes")
    add("CreateModel", create_(architecture=_arch(layer_sizes=[2, 0, 1])), "layer_sizes[1]")
    add("CreateModel", create_(architecture=_arch(layer_sizes=[0, 1])), "layer_sizes[0]")
    for field, value in (("hidden_activation", 99), ("hidden_activation", -1),
                         ("output_activation", 6), ("loss", 3), ("loss", -7),
                         ("gradient_mode", 3)):
        add("CreateModel", create_(architecture=_arch(**{field: value})), field, str(value))
    add("CreateModel", create_(architecture=_arch(dtype=5)), "architecture.dtype", "5")
    add("CreateModel", create_(architecture=_arch(), metadata={f"k{i}": "v" for i in range(65)}),
        "metadata", "65 entries", "64")
    add("CreateModel", create_(architecture=_arch(), metadata={"": "v"}), "metadata", "empty key")
    add("CreateModel", create_(architecture=_arch(), metadata={"big": "x" * 4094}),
        "metadata['big']", "4097 bytes")
    add("CreateModel", create_(architecture=_arch(), init=4), "init", "4")
    add("CreateModel", create_(architecture=_arch(), init=-2, layers=_layers()), "init")
    add("CreateModel", create_(architecture=_arch(hidden_activation=pb.ACTIVATION_SOFTMAX)),
        "hidden_activation", "SOFTMAX", "output layer")
    for output in (pb.ACTIVATION_TANH, pb.ACTIVATION_RELU):
        add("CreateModel", create_(architecture=_arch(output_activation=output)),
            "output_activation")
    add("CreateModel", create_(architecture=_arch(output_activation=pb.ACTIVATION_LINEAR,
                                                  loss=pb.LOSS_CROSS_ENTROPY)), "loss",
        "CROSS_ENTROPY")
    # -- CreateModel: explicit layers
    arch = _arch()
    add("CreateModel", create_(architecture=arch, layers=_layers()[:1]), "layers")
    add("CreateModel", create_(architecture=arch, layers=_layers() * 2), "layers")
    add("CreateModel", create_(architecture=arch, layers=_layers(drop=["0.weights"])),
        "layers[0].weights")
    add("CreateModel", create_(architecture=arch, layers=_layers(w0=tensor(np.ones((2, 3))))),
        "layers[0].weights", "[3, 2]")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w1=tensor([[0.1, NAN, 0.1]]))), "layers[1].weights", "finite")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w1=tensor([[0.1, -INF, 0.1]], raw=True))), "layers[1].weights", "finite")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w0=pb.Tensor(shape=[3, 2], raw=b"\0" * 47))), "layers[0].weights.raw", "47 bytes")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w0=pb.Tensor(shape=[3, 2], values=[0.0] * 5))), "layers[0].weights.values")
    add("CreateModel", create_(architecture=arch, layers=_layers(w1=_both([[0.1, 0.2, 0.3]]))),
        "layers[1].weights", "both")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w0=pb.Tensor(shape=[3, 2, 1], values=[0.0] * 6))), "layers[0].weights.shape")
    add("CreateModel", create_(architecture=arch, layers=_layers(
        w0=pb.Tensor(values=[0.0] * 6))), "layers[0].weights.shape")
    add("CreateModel", create_(architecture=arch, layers=_layers(drop=["1.biases"])),
        "layers[1].biases")
    add("CreateModel", create_(architecture=arch, layers=_layers(b0=tensor(np.zeros(4)))),
        "layers[0].biases")
    add("CreateModel", create_(architecture=arch, layers=_layers(b0=tensor([0.0, INF, 0.0]))),
        "layers[0].biases", "finite")
    add("CreateModel", create_(architecture=_arch(bias=False), layers=_layers()),
        "layers[0].biases")

    # -- ListModels
    for token in ("not-a-token", "%%%", "YWZ0ZXI6Li4vZXRj", "é"):  # the third: "after:../etc"
        add("ListModels", pb.ListModelsRequest(page_token=token), "page_token")

    # -- Train: data
    add("Train", _train(inputs=pb.Tensor()), "inputs.shape")
    add("Train", _train(targets=pb.Tensor()), "targets.shape")
    add("Train", _train(inputs=tensor([[0.0, NAN], [1.0, 0.0]])), "inputs[0, 1]", "finite")
    add("Train", _train(targets=tensor([[1.0], [INF]], raw=True)), "targets[1, 0]", "finite")
    add("Train", _train(inputs=tensor([[0.0, 1.0, 2.0]] * 2)), "inputs", "3 columns")
    add("Train", _train(targets=tensor([[1.0, 0.0]] * 2)), "targets", "2 columns")
    add("Train", _train(targets=tensor([[1.0]] * 3)), "inputs", "targets", "rows")
    add("Train", _train(inputs=pb.Tensor(shape=[2, 2], raw=b"\0" * 31)), "inputs.raw",
        "31 bytes")
    add("Train", _train(targets=pb.Tensor(shape=[2, 1], values=[1.0])), "targets.values")
    add("Train", _train(inputs=_both(X)), "inputs", "both")
    add("Train", _train(inputs=pb.Tensor(shape=[0, 2]), targets=pb.Tensor(shape=[0, 1])),
        "inputs", "rows")
    add("Train", _train(inputs=pb.Tensor(shape=[0, 2], values=[1.0])), "inputs", "zero")
    add("Train", _train(inputs=pb.Tensor(shape=[2, 2, 1], raw=b"\0" * 32)), "inputs.shape")
    # -- Train: options
    add("Train", _train(epochs=0), "epochs")
    for rate in (0.0, -0.1, NAN, INF, -INF):
        add("Train", _train(learning_rate=rate), "learning_rate")
    for momentum in (-0.1, 1.0, 5.0, NAN, INF):
        add("Train", _train(momentum=momentum), "momentum")
    for target_loss in (-1.0, NAN, INF):
        add("Train", _train(target_loss=target_loss), "target_loss")

    # -- Step (applied and dry-run alike)
    for dry_run in (False, True):
        def step(dry_run=dry_run, **f):
            return _step(dry_run=dry_run, **f)
        add("Step", step(input=[0.0, 1.0, 2.0]), "input")
        add("Step", step(input=[]), "input")
        add("Step", step(target=[1.0, 0.0]), "target")
        add("Step", step(target=[]), "target")
        add("Step", step(input=[NAN, 1.0]), "input", "finite")
        add("Step", step(target=[-INF]), "target", "finite")
        for rate in (0.0, -1.0, NAN, INF):
            add("Step", step(learning_rate=rate), "learning_rate")

    # -- Predict
    def predict(t):
        return pb.PredictRequest(model_id="m", inputs=t)
    add("Predict", pb.PredictRequest(model_id="m"), "inputs.shape")
    add("Predict", predict(tensor([[0.0, NAN]])), "inputs", "finite")
    add("Predict", predict(tensor([[INF, 0.0]], raw=True)), "inputs", "finite")
    add("Predict", predict(tensor([[0.0, 1.0, 2.0]])), "inputs", "3 columns")
    add("Predict", predict(pb.Tensor(shape=[1, 2], raw=b"\0" * 15)), "inputs.raw", "15 bytes",
        "16")
    add("Predict", predict(pb.Tensor(shape=[2, 2], values=[1.0, 2.0, 3.0])), "inputs.values")
    add("Predict", predict(_both([[0.0, 1.0]])), "inputs", "both values and raw")
    add("Predict", predict(pb.Tensor(shape=[0, 2], raw=b"\0" * 8)), "inputs", "zero")
    add("Predict", predict(pb.Tensor(shape=[0, 2], values=[1.0])), "inputs", "zero")
    add("Predict", predict(pb.Tensor(shape=[1, 1, 2], values=[0.0, 1.0])), "inputs.shape")
    add("Predict", predict(pb.Tensor(shape=[1] * 70, values=[1.0])), "inputs.shape")
    add("Predict", predict(pb.Tensor(shape=[3], values=[1.0, 2.0, 3.0])), "inputs")
    return cases


def test_every_field_of_every_rpc_is_validated_naming_the_field(make_server):
    server = make_server()
    stub = server.stub
    create(stub, "m", sizes=(2, 4, 1), seed=3)
    before = fingerprint(server.data_dir)
    cases = _cases()
    problems = []
    for rpc, request, words in cases:
        exc = error_of(lambda rpc=rpc, request=request: getattr(stub, rpc)(request,
                                                                           timeout=TIMEOUT))
        details = exc.details() or ""
        if exc.code() != C.INVALID_ARGUMENT:
            problems.append(f"{rpc} {request}: {exc.code()} {details}")
        missing = [w for w in words if w not in details]
        if missing:
            problems.append(f"{rpc}: message {details!r} lacks {missing}")
    assert not problems, "\n".join(problems)
    assert fingerprint(server.data_dir) == before  # none of it changed anything
    assert len(cases) > 150


def test_request_bytes_that_do_not_parse_are_invalid_argument(make_server):
    """grpc alone answers INTERNAL ("Exception deserializing request!") for such bytes; the
    server answers INVALID_ARGUMENT naming the method, like any other malformed request."""
    server = make_server()
    # an unterminated tag, tag 0, a length past the end, an unterminated varint, a group
    # never closed: corrupt for every message (a wrong wire type merely makes a field unknown)
    garbage = [b"\xff\xff\xff", b"\x00", b"\x0a\x05ab", b"\x08\x80", b"\x0b"]
    for method in RPCS:
        for data in garbage:
            if method in STREAMING:
                call = server.channel.unary_stream(f"/{SERVICE}/{method}")
            else:
                call = server.channel.unary_unary(f"/{SERVICE}/{method}")
            exc = error_of(lambda call=call, data=data: call(data, timeout=TIMEOUT))
            assert exc.code() == C.INVALID_ARGUMENT, (method, data, exc.code(), exc.details())
            assert f"the {method} request does not parse" in exc.details()
    health = server.channel.unary_unary("/grpc.health.v1.Health/Check")
    assert error_of(lambda: health(b"\xff\xff", timeout=TIMEOUT)).code() == C.INVALID_ARGUMENT
