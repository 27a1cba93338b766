"""The page's JSON API: each route reads its request, makes its calls through the jitnet
Client (the server's own gRPC port) and answers JSON. HTTP itself (statics, limits, content
types, streaming, cancellation) is server.py's; errors are http_status.py's.

    GET    /api/info                         the server's health, the gRPC address, auth
    POST   /api/datasets                     a data set: xor, circle, moons, spiral, clusters, csv
    GET    /api/models                       ListModels
    POST   /api/models                       CreateModel (or {"article": true})
    GET    /api/models/ID                    GetModel with the weights
    DELETE /api/models/ID                    DeleteModel
    GET    /api/models/ID/frame?steps=&x=&y= GetModel with weights, and a Predict over a grid
    GET    /api/models/ID/activations?input= a dry-run Step: every neuron's net and output
    POST   /api/models/ID/predict            Predict
    POST   /api/models/ID/step               Step, with the article's explanation and drawing
    POST   /api/models/ID/train              Train: its progress as newline-delimited JSON

Bodies are JSON objects; a field the route does not know, or of the wrong kind, is a 400 that
names it (the server validates the values themselves, as for any client).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from http import HTTPStatus
from urllib.parse import unquote

import numpy as np

from jitnet.client import Client, JitnetError, Model, StepTrace, datasets, draw, explain

from . import datasets as page_datasets
from .http_status import BadRequest, HttpError

MAX_GRID_STEPS = 200  # the decision surface's grid: steps x steps points in one Predict
SURFACE_DECIMALS = 4  # the surface's outputs, rounded: colours need no more
ACTIVATIONS_LEARNING_RATE = 0.001  # a dry-run Step's rate changes nothing; the server wants one


# -- reading requests -------------------------------------------------------------------------

REQUIRED = object()  # a getter's default for a field that must be there


class Body:
    """A JSON object's fields, read by kind; BadRequest names a field missing or of the wrong
    kind. `unknown()` refuses fields the route never read (a misspelt option would otherwise
    be silently ignored)."""

    def __init__(self, fields: dict, allowed: tuple[str, ...]):
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise BadRequest(f"unknown field{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; this request takes "
                             f"{', '.join(allowed) or 'no fields'}")
        self._fields = fields

    def has(self, name: str) -> bool:
        return self._fields.get(name) is not None

    def _get(self, name: str, default):
        value = self._fields.get(name)
        if value is None:
            if default is REQUIRED:
                raise BadRequest(f"{name} is required")
            return default
        return value

    def number(self, name: str, default=None) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest(f"{name} must be a number, got {value!r}")
        return float(value)

    def integer(self, name: str, default=None) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise BadRequest(f"{name} must be a whole number, got {value!r}")
        return int(value)

    def boolean(self, name: str, default=None) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false, got {value!r}")
        return value

    def text(self, name: str, default=None) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be text, got {type(value).__name__}")
        return value

    def vector(self, name: str, default=None) -> list[float]:
        value = self._get(name, default)
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            raise BadRequest(f"{name} must be a list of numbers")
        return [float(v) for v in value]

    def integers(self, name: str, default=None) -> list[int]:
        value = self._get(name, default)
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise BadRequest(f"{name} must be a list of whole numbers, e.g. [2, 4, 1]")
        return value

    def matrix(self, name: str, default=None) -> np.ndarray:
        """A list of rows of numbers, all of one length, as a float64 [rows, columns] array."""
        value = self._get(name, default)
        if (not isinstance(value, list) or not all(isinstance(row, list) for row in value)
                or len({len(row) for row in value}) > 1
                or not all(_is_number(v) for row in value for v in row)):
            raise BadRequest(f"{name} must be a list of rows, each a list of numbers of one "
                             "length")
        return np.array(value, dtype=np.float64).reshape(len(value), -1)

    def layers(self, name: str) -> list | None:
        """Explicit weights: [{"weights": [[...]], "biases": [...] or null}, ...]."""
        value = self._get(name, [])
        if not isinstance(value, list) or not all(isinstance(layer, dict) for layer in value):
            raise BadRequest(f"{name} must be a list of {{weights, biases}} objects")
        layers = []
        for layer in value:
            each = Body(layer, ("weights", "biases"))
            biases = np.array(each.vector("biases")) if each.has("biases") else None
            layers.append((each.matrix("weights", REQUIRED), biases))
        return layers or None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _query_numbers(query: dict[str, str], name: str, count: int | None = None) -> list[float]:
    text = query.get(name, "")
    try:
        values = [float(v) for v in text.split(",")] if text else []
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count) or not all(
            math.isfinite(v) for v in values):
        want = f"{count} numbers" if count else "numbers"
        raise BadRequest(f"{name} must be {want} separated by commas, got {text!r}")
    return values


# -- answers ----------------------------------------------------------------------------------


def _array(a) -> list | None:
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


def model_json(m: Model) -> dict:
    out = {
        "id": m.id, "layer_sizes": list(m.layer_sizes), "hidden": m.hidden_activation,
        "output": m.output_activation, "loss": m.loss, "bias": m.bias,
        "gradient_mode": m.gradient_mode, "version": m.version,
        "epochs_trained": m.epochs_trained, "iterations": m.iterations,
        "last_loss": m.last_loss, "parameter_count": m.parameter_count,
        "describe": m.describe(),
        "update_time": m.update_time.isoformat() if m.update_time else None,
    }
    if m.layers is not None:
        out["layers"] = [{"weights": _array(w), "biases": _array(b)} for w, b in m.layers]
    return out


def trace_json(trace: StepTrace) -> list[dict]:
    layers = []
    for k, layer in enumerate(trace.layers):
        before_w, before_b = explain.weights_before(trace, k)
        layers.append({"net": _array(layer.net), "output": _array(layer.output),
                       "error": _array(layer.error), "delta": _array(layer.delta),
                       "weights_before": _array(before_w), "biases_before": _array(before_b),
                       "weights": _array(layer.weights), "biases": _array(layer.biases)})
    return layers


def progress_json(progress) -> dict:
    """A Train progress message; the optional fields (validation, accuracy, ...) when the
    client's Progress has them and the server sent them."""
    out = {}
    for field in dataclasses.fields(progress):
        value = getattr(progress, field.name)
        if value is not None:
            out[field.name] = value
    return out


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: dict
    params: tuple[str, ...] = ()  # the route's groups (a model id)


@dataclasses.dataclass
class Answer:
    value: dict
    status: HTTPStatus = HTTPStatus.OK


# A route's answer: JSON, or a stream of JSON lines (a generator, started by the server).
Handler = Callable[["Api", Request], "Answer | Iterator[dict]"]


class Api:
    def __init__(self, client: Client, *, grpc_target: str, token_required: bool):
        self.client = client
        self.grpc_target = grpc_target
        self.token_required = token_required

    def info(self, request: Request) -> Answer:
        Body(request.body, ())
        try:
            health = self.client.health()
        except JitnetError as e:
            health = e.code.name
        return Answer({"grpc_target": self.grpc_target, "health": health,
                       "token_required": self.token_required,
                       "datasets": list(page_datasets.KINDS),
                       "train_options": list(TRAIN_OPTIONS)})

    def dataset(self, request: Request) -> Answer:
        body = Body(request.body, ("kind", "points", "noise", "seed", "validation_fraction",
                                   "classes", "csv", "target_columns"))
        points = page_datasets.generate(
            body.text("kind", "xor"), points=body.integer("points", 200),
            noise=body.number("noise", 0.1), seed=body.integer("seed", 0),
            validation_fraction=body.number("validation_fraction", 0.0),
            classes=body.integer("classes", 2), csv=body.text("csv", ""),
            target_columns=body.integer("target_columns", 1))
        return Answer(points.to_json())

    def list_models(self, request: Request) -> Answer:
        Body(request.body, ())
        return Answer({"models": [model_json(m) for m in self.client.list_models()]})

    def create_model(self, request: Request) -> Answer:
        body = Body(request.body, ("article", "model_id", "layer_sizes", "hidden", "output",
                                   "loss", "bias", "gradient_mode", "init", "seed", "layers"))
        model_id = body.text("model_id", "")
        if body.boolean("article", False):
            net = datasets.article()
            model = self.client.create_model(net.layer_sizes, layers=net.layers,
                                             model_id=model_id, **net.architecture)
        else:
            model = self.client.create_model(
                body.integers("layer_sizes", REQUIRED), hidden=body.text("hidden", "sigmoid"),
                output=body.text("output", "sigmoid"),
                loss=body.text("loss", "mse"), bias=body.boolean("bias", True),
                gradient_mode=body.text("gradient_mode", "exact"),
                init=body.text("init", "xavier"), seed=body.integer("seed", 0),
                layers=body.layers("layers"), model_id=model_id)
        return Answer(model_json(model), HTTPStatus.CREATED)

    def get_model(self, request: Request) -> Answer:
        Body(request.body, ())
        return Answer(model_json(self.client.get_model(request.params[0], include_weights=True)))

    def delete_model(self, request: Request) -> Answer:
        Body(request.body, ())
        self.client.delete_model(request.params[0])
        return Answer({"deleted": request.params[0]})

    def frame(self, request: Request) -> Answer:
        """What the page draws after a commit: the weights, and (for two inputs, given the
        plane's x and y ranges) the outputs over a steps x steps grid, row by row from the
        lowest y, each row from the lowest x."""
        model_id = request.params[0]
        model = self.client.get_model(model_id, include_weights=True)
        out = {"model": model_json(model)}
        if "x" in request.query or "y" in request.query:
            if model.layer_sizes[0] != 2:
                raise BadRequest(f"a decision surface needs a model with 2 inputs; "
                                 f"'{model_id}' has {model.layer_sizes[0]}")
            x0, x1 = _query_numbers(request.query, "x", 2)
            y0, y1 = _query_numbers(request.query, "y", 2)
            try:
                steps = int(request.query.get("steps", "50"))
            except ValueError:
                steps = 0
            if not 2 <= steps <= MAX_GRID_STEPS:
                raise BadRequest(f"steps must be a whole number from 2 to {MAX_GRID_STEPS}")
            gx, gy = np.meshgrid(np.linspace(x0, x1, steps), np.linspace(y0, y1, steps))
            outputs, version = self.client.predict(
                model_id, np.column_stack([gx.ravel(), gy.ravel()]), with_version=True)
            out["surface"] = {"steps": steps, "x": [x0, x1], "y": [y0, y1], "version": version,
                              "outputs": np.round(outputs, SURFACE_DECIMALS).tolist()}
        return Answer(out)

    def activations(self, request: Request) -> Answer:
        """Every neuron's net and output for one input: a dry-run Step (the target is zeros;
        only the forward pass is shown)."""
        model_id = request.params[0]
        model = self.client.get_model(model_id)
        x = _query_numbers(request.query, "input")
        trace = self.client.step(model_id, x, [0.0] * model.layer_sizes[-1],
                                 ACTIVATIONS_LEARNING_RATE, dry_run=True)
        return Answer({"input": x, "version": trace.version,
                       "layers": [{"net": _array(layer.net), "output": _array(layer.output)}
                                  for layer in trace.layers]})

    def predict(self, request: Request) -> Answer:
        body = Body(request.body, ("inputs",))
        outputs, version = self.client.predict(request.params[0],
                                               body.matrix("inputs", REQUIRED), with_version=True)
        return Answer({"outputs": _array(outputs), "version": version})

    def step(self, request: Request) -> Answer:
        """One iteration on one sample (committed unless dry_run), with the article's
        arithmetic line by line (`jitnet step --explain`) and the step drawn (SVG text)."""
        body = Body(request.body, ("input", "target", "learning_rate", "dry_run"))
        model_id = request.params[0]
        model = self.client.get_model(model_id)
        trace = self.client.step(model_id, body.vector("input", REQUIRED),
                                 body.vector("target", REQUIRED),
                                 body.number("learning_rate", REQUIRED),
                                 dry_run=body.boolean("dry_run", False))
        return Answer({"version": trace.version, "loss": trace.loss, "dry_run": trace.dry_run,
                       "input": _array(trace.input), "target": _array(trace.target),
                       "learning_rate": trace.learning_rate, "layers": trace_json(trace),
                       "explain": explain.explain(trace, model),
                       "svg": draw.step_svg(trace, model)})

    def train(self, request: Request) -> Iterator[dict]:
        """Train's progress, one JSON object per message, as the server commits. The call
        starts when the server takes the first one; closing the generator cancels it."""
        body = Body(request.body, ("inputs", "targets", *TRAIN_OPTIONS))
        inputs = body.matrix("inputs", REQUIRED)
        targets = body.matrix("targets", REQUIRED)
        options = {name: read(body, name) for name, read in TRAIN_OPTIONS.items()
                   if body.has(name)}
        for progress in self.client.train(request.params[0], inputs, targets, **options):
            yield progress_json(progress)


# Train's options as the page sends them, each read by its kind and passed to Client.train.
TRAIN_OPTIONS: dict[str, Callable[[Body, str], object]] = {
    "epochs": Body.integer,
    "learning_rate": Body.number,
    "batch_size": Body.integer,
    "momentum": Body.number,
    "shuffle": Body.boolean,
    "seed": Body.integer,
    "target_loss": Body.number,
    "report_every": Body.integer,
}

_ID = r"([^/]+)"
ROUTES: list[tuple[str, re.Pattern, Handler]] = [
    ("GET", re.compile(r"/api/info"), Api.info),
    ("POST", re.compile(r"/api/datasets"), Api.dataset),
    ("GET", re.compile(r"/api/models"), Api.list_models),
    ("POST", re.compile(r"/api/models"), Api.create_model),
    ("GET", re.compile(rf"/api/models/{_ID}"), Api.get_model),
    ("DELETE", re.compile(rf"/api/models/{_ID}"), Api.delete_model),
    ("GET", re.compile(rf"/api/models/{_ID}/frame"), Api.frame),
    ("GET", re.compile(rf"/api/models/{_ID}/activations"), Api.activations),
    ("POST", re.compile(rf"/api/models/{_ID}/predict"), Api.predict),
    ("POST", re.compile(rf"/api/models/{_ID}/step"), Api.step),
    ("POST", re.compile(rf"/api/models/{_ID}/train"), Api.train),
]
STREAMING = {Api.train}


def route(method: str, path: str) -> tuple[Handler, tuple[str, ...]]:
    """The handler of a method and path, and the path's groups (unquoted). 404 for a path no
    route has, 405 (naming the methods it takes) for one it has with another method."""
    allowed = []
    for verb, pattern, handler in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if verb == method:
                return handler, tuple(unquote(g) for g in match.groups())
            allowed.append(verb)
    if allowed:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED,
                        f"{method} {path} is not a request this API takes; use "
                        f"{' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
    raise HttpError(HTTPStatus.NOT_FOUND, f"no such API route: {path}")
