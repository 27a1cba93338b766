"""`jitnet`: the command line.

    jitnet demo                                    # the article's step explained, then XOR
    jitnet demo --web                              # the playground page, in your browser
    jitnet serve --port 50051 --data-dir ./models
    jitnet create --id xor --layers 2,4,1 --init uniform
    jitnet train xor --data xor --epochs 5000 --learning-rate 0.5 --target-loss 0.001
    jitnet predict xor --input 0,1 --input 1,1
    jitnet create --article --id article
    jitnet step article --input 0,1 --expect 1 --learning-rate 0.001 --explain --draw step.svg
    jitnet step article --input 0,1 --expect 1 --check-gradients
    jitnet train xor --data xor --epochs 5000 --learning-rate 0.5 --plot train.svg
    jitnet models list | show ID [--weights] | delete ID
    jitnet export digits digits.onnx [--triton-repo models/]   # ONNX; Triton's repository
    jitnet import net.onnx --id net [--output NAME] [--loss mse]
    jitnet health                                  # exit 0 iff SERVING

Connection flags go before or after the command: --target (JITNET_TARGET, default
127.0.0.1:50051), --timeout (seconds per call, default 30; Train has none), --token
(JITNET_TOKEN), --tls, --ca-cert FILE.

Errors print one line to stderr, `error: NOT_FOUND: model 'm1' not found`, and the exit code
says what kind (client/errors.py has the table): 2 a bad argument or INVALID_ARGUMENT, 3
NOT_FOUND, 4 ALREADY_EXISTS, 5 ABORTED, 6 FAILED_PRECONDITION, 7 RESOURCE_EXHAUSTED,
8 UNAVAILABLE, 9 DEADLINE_EXCEEDED, 10 CANCELLED, 11 UNAUTHENTICATED, 12 INTERNAL, 1 anything
else (`health` when the server answers but is not SERVING; an optional package a picture needs,
`pip install 'jitnet[plot]'`), 130 Ctrl-C.

Only `serve` and `demo` import the server (and with it numba); every other command stays light.
matplotlib (and cairosvg, for a .png drawing) are imported only by --plot, --draw FILE.png and
the demo's training plot; onnx (`pip install 'jitnet[onnx]'`) only by export and import. This
module holds the command table and the commands; the demo is in demo.py, the progress bar of
train and demo in progress.py, pictures in draw.py and plot.py, ONNX in onnx.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from . import datasets, demo, draw, explain, plot
from .client import DEFAULT_TARGET, DEFAULT_TIMEOUT, Client
from .errors import JitnetError
from .progress import ProgressBar, train_with_progress, trained_line
from .results import Model
from .wire import enum_short_names

EXIT_USAGE = 2
EXIT_NOT_SERVING = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message, and no sys.exit
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --- parsing -------------------------------------------------------------------------------

def _floats(text: str) -> list[float]:
    """'0,1' or '0 1' -> [0.0, 1.0]."""
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.replace("-", ",").replace(" ", ",").split(",") if v]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected layer sizes like 2,4,1, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
        return value
    return parse


def enum_choice(kind: str):
    """An argparse type accepting one of a kind's short names ("tanh", "cross-entropy")."""
    names = enum_short_names(kind)

    def parse(text: str) -> str:
        name = text.strip().lower().replace("-", "_")
        if name not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")
        return name
    return parse


def _connection_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    """The same flags on the main parser (with defaults) and on each command (SUPPRESS, so a
    flag given before the command is not reset by the command's parser)."""
    def default(value):
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    target = os.environ.get("JITNET_TARGET") or DEFAULT_TARGET
    group.add_argument("--target", default=default(target),
                       help=f"server address host:port [JITNET_TARGET, default {DEFAULT_TARGET}]")
    group.add_argument("--timeout", type=_positive(float), default=default(DEFAULT_TIMEOUT),
                       help="deadline of each call in seconds (default 30; train has none)")
    group.add_argument("--token", default=default(os.environ.get("JITNET_TOKEN") or None),
                       help="bearer token the server asks for [JITNET_TOKEN]")
    group.add_argument("--tls", action="store_true", default=default(False),
                       help="connect with TLS (the system's root certificates)")
    group.add_argument("--ca-cert", metavar="FILE", default=default(None),
                       help="PEM root certificate(s) to trust; implies --tls")


def _data_flags(parser: argparse.ArgumentParser, *, targets_required: bool) -> None:
    group = parser.add_argument_group(
        "data (one of --data, --inputs, --csv" + ("" if targets_required else ", --input") + ")")
    group.add_argument("--data", choices=sorted(datasets.BUILTIN),
                       help="a built-in data set (digits and iris need scikit-learn)")
    group.add_argument("--inputs", metavar="FILE", help="inputs [rows, n_in] as .npy or .csv")
    group.add_argument("--targets", metavar="FILE", help="targets [rows, n_out] as .npy or .csv")
    group.add_argument("--csv", metavar="FILE",
                       help="one CSV with inputs and targets; see --target-columns")
    group.add_argument("--target-columns", type=int, default=1 if targets_required else 0,
                       metavar="N", help="the last N columns of --csv are targets (default %s)"
                       % (1 if targets_required else 0))


def build_parser(serve_flags: bool = False) -> argparse.ArgumentParser:
    """The `jitnet` parser. `serve`'s flags come from the server's config module, which is
    imported only when `serve_flags` is set (main sets it when the command is serve)."""
    parser = _Parser(prog="jitnet", description="Train, serve and explain small neural "
                     "networks.", epilog="Run 'jitnet COMMAND --help' for a command's flags.")
    _connection_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help: str, connection: bool = True, **kwargs) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help, **kwargs)
        if connection:
            _connection_flags(p, top=False)
        return p

    p = command("serve", "run the server (flags also as JITNET_* variables)", connection=False)
    if serve_flags:
        from jitnet.service import config as service_config
        service_config.add_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = command("demo", "start a server in-process, explain the article's step, train XOR",
                connection=False)
    p.add_argument("--data-dir", help="keep the models here (default: a temporary directory)")
    p.add_argument("--out", default=".", metavar="DIR",
                   help="write the pictures (the step drawn, the XOR training plotted) here "
                        "(default: the current directory)")
    p.add_argument("--epochs", type=int, default=5000, help="most XOR epochs (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--web", action="store_true",
                   help="instead: serve the playground page (a network learning in your "
                        "browser) on 127.0.0.1 and print its address; Ctrl-C stops it")
    p.add_argument("--web-port", type=int, default=0, metavar="PORT",
                   help="the page's port with --web (default 0: a free one)")
    p.add_argument("--seconds", type=_positive(float), metavar="SECONDS",
                   help="with --web, stop after this long (default: at Ctrl-C)")
    p.set_defaults(func=demo.run)

    p = command("create", "create a model")
    p.add_argument("--id", default="", help="model id (default: the server makes one)")
    p.add_argument("--layers", type=_sizes, metavar="SIZES",
                   help="layer sizes, inputs first, e.g. 2,4,1")
    p.add_argument("--hidden", type=enum_choice("activation"), default="sigmoid",
                   help=f"hidden activation: {', '.join(enum_short_names('activation'))} "
                        "(default sigmoid)")
    p.add_argument("--output", type=enum_choice("activation"), default="sigmoid",
                   help="output activation (default sigmoid)")
    p.add_argument("--loss", type=enum_choice("loss"), default="mse",
                   help=f"{', '.join(enum_short_names('loss'))} (default mse)")
    p.add_argument("--no-bias", action="store_true", help="no biases (the article has none)")
    p.add_argument("--gradient-mode", type=enum_choice("gradient_mode"), default="exact",
                   help="exact, or article: the article's f(y) * (1 - f(y)) (default exact)")
    p.add_argument("--init", type=enum_choice("init"), default="xavier",
                   help="uniform (U[0,1), the article's), xavier or he (default xavier)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--weights", metavar="FILE.json",
                   help='explicit weights: [{"weights": [[...]], "biases": [...]}, ...] per layer')
    p.add_argument("--article", action="store_true",
                   help="the article's 2-4-1 network: sigmoid, no bias, article gradients and "
                        "weights")
    p.set_defaults(func=_cmd_create)

    p = command("train", "train a model, with a progress bar")
    p.add_argument("model", help="model id")
    _data_flags(p, targets_required=True)
    p.add_argument("--epochs", type=_positive(int), required=True)
    p.add_argument("--learning-rate", "--lr", type=_positive(float), required=True)
    p.add_argument("--batch-size", type=int, default=1, help="samples per update (default 1)")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--shuffle", action="store_true", help="shuffle the rows every epoch")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    p.add_argument("--target-loss", type=float, default=0.0,
                   help="stop once an epoch's mean loss is at or below this (default 0: never)")
    p.add_argument("--report-every", type=int, default=0,
                   help="epochs between progress reports (default 0: about once a second)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plot", metavar="FILE",
                   help="plot the loss per reported epoch and, for two inputs, the decision "
                        "surface, to FILE.svg or FILE.png (needs pip install 'jitnet[plot]'; "
                        f"without --report-every, about {plot.PLOT_POINTS} reports)")
    p.set_defaults(func=_cmd_train)

    p = command("predict", "run a model forward")
    p.add_argument("model", help="model id")
    p.add_argument("--input", type=_floats, action="append", metavar="X1,X2,...",
                   help="one input row; repeat for more")
    _data_flags(p, targets_required=False)
    p.set_defaults(func=_cmd_predict)

    p = command("step", "one iteration on one sample, with every intermediate value")
    p.add_argument("model", help="model id")
    p.add_argument("--input", type=_floats, required=True, metavar="X1,X2,...")
    p.add_argument("--expect", type=_floats, required=True, metavar="T1,...",
                   help="the target output for this input (the article's `target`; --target is "
                        "the server's address)")
    p.add_argument("--learning-rate", "--lr", type=_positive(float),
                   help="the step's learning rate (needed unless --check-gradients alone)")
    p.add_argument("--dry-run", action="store_true", help="compute and show, keep the weights")
    p.add_argument("--explain", action="store_true",
                   help="write out the arithmetic line by line, as the article does")
    p.add_argument("--draw", metavar="FILE",
                   help="draw the step, the network with every number, to FILE.svg or FILE.png "
                        "(.png needs pip install 'jitnet[plot]')")
    p.add_argument("--check-gradients", action="store_true",
                   help="first compare the engine's gradient for this sample with central "
                        "finite differences (changes nothing); alone without --learning-rate")
    p.add_argument("--epsilon", type=_positive(float), default=0.0,
                   help="the finite differences' step (default: the server's, 1e-4)")
    p.set_defaults(func=_cmd_step)

    p = command("models", "list, show or delete models")
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    sub.required = True
    q = sub.add_parser("list", help="every model")
    _connection_flags(q, top=False)
    q.set_defaults(func=_cmd_models_list)
    q = sub.add_parser("show", help="one model, optionally with its weights")
    _connection_flags(q, top=False)
    q.add_argument("model", help="model id")
    q.add_argument("--weights", action="store_true", help="print the weights and biases")
    q.set_defaults(func=_cmd_models_show)
    q = sub.add_parser("delete", help="delete a model")
    _connection_flags(q, top=False)
    q.add_argument("model", help="model id")
    q.set_defaults(func=_cmd_models_delete)

    p = command("export", "a model as an ONNX file, and/or a Triton model repository")
    p.add_argument("model", help="model id")
    p.add_argument("file", nargs="?", help="the .onnx file to write")
    p.add_argument("--triton-repo", metavar="DIR",
                   help="also write DIR/NAME/1/model.onnx and DIR/NAME/config.pbtxt")
    p.add_argument("--name", help="the Triton model's name (default: the model id)")
    p.add_argument("--max-batch-size", type=_positive(int), default=None, metavar="N",
                   help="config.pbtxt's max_batch_size (default 256)")
    p.set_defaults(func=_cmd_export)

    p = command("import", "create a model from an ONNX file (torch, skl2onnx, jitnet export)")
    p.add_argument("file", help="the .onnx file")
    p.add_argument("--id", default="", help="the new model's id (default: the server makes one)")
    p.add_argument("--output", help="the graph output to import when it has several")
    p.add_argument("--loss", type=enum_choice("loss"), default=None,
                   help="the loss to train it with (default: the file's, else cross_entropy "
                        "for a softmax or sigmoid output, mse otherwise)")
    p.set_defaults(func=_cmd_import)

    p = command("health", "the server's health; exit 0 iff SERVING")
    p.add_argument("--service", default="", help="service name (default: the whole server)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for SERVING (a server compiles its kernels first)")
    p.set_defaults(func=_cmd_health)
    return parser


# --- main ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(serve_flags="serve" in argv).parse_args(argv)
        return args.func(args)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    except JitnetError as e:
        return _fail(str(e), e.exit_code)
    except datasets.DataError as e:
        return _fail(str(e), EXIT_USAGE)
    except draw.MissingDependency as e:
        return _fail(str(e), 1)
    except OSError as e:
        return _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _client(args) -> Client:
    return Client(args.target, timeout=args.timeout, tls=bool(args.tls or args.ca_cert),
                  root_certificates=args.ca_cert, token=args.token)


# --- commands ------------------------------------------------------------------------------

def _cmd_serve(args) -> int:
    from jitnet.service import config as service_config
    from jitnet.service.server import main as server

    try:
        cfg = service_config.Config.from_namespace(args)
    except ValueError as e:  # ConfigError names the flag and the variable
        raise UsageError(str(e)) from None
    return server.run(cfg)


def _load_layers(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            layers = json.load(f)
    except json.JSONDecodeError as e:
        raise datasets.DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(layers, list):
        raise datasets.DataError(f"{path}: expected a list with one entry per layer")
    return layers


def _cmd_create(args) -> int:
    if args.article:
        sizes, layers, kwargs = datasets.article()
    else:
        if args.layers is None:
            raise UsageError("--layers is required (e.g. --layers 2,4,1), or use --article")
        sizes = args.layers
        kwargs = dict(hidden=args.hidden, output=args.output, loss=args.loss,
                      bias=not args.no_bias, gradient_mode=args.gradient_mode)
        layers = _load_layers(args.weights) if args.weights else None
    with _client(args) as client:
        model = client.create_model(sizes, init=args.init, seed=args.seed, layers=layers,
                                    model_id=args.id, **kwargs)
    print(f"created model '{model.id}': {model.describe()}, {model.parameter_count} "
          f"parameters, version {model.version}")
    return 0


def _load_data(args, *, targets_required: bool) -> datasets.DataSet:
    given = [flag for flag, value in (("--data", args.data), ("--inputs", args.inputs),
                                      ("--csv", args.csv),
                                      ("--input", getattr(args, "input", None)))
             if value]
    if len(given) != 1:
        what = "--data, --inputs or --csv" + ("" if targets_required else " or --input")
        raise UsageError(f"give one of {what}" + (f", not {' and '.join(given)}" if given else ""))
    if args.data:
        data = datasets.builtin(args.data)
    elif args.csv:
        data = datasets.load_csv(args.csv, args.target_columns)
    elif args.inputs:
        targets = datasets.load_array(args.targets) if args.targets else None
        data = datasets.DataSet(datasets.load_array(args.inputs), targets,
                                os.path.basename(args.inputs))
    else:
        rows = args.input
        if len({len(r) for r in rows}) != 1:
            raise UsageError("every --input needs the same number of values")
        data = datasets.DataSet(np.array(rows, dtype=np.float64), None, "--input")
    if targets_required and data.targets is None:
        raise UsageError("training needs targets: --targets FILE with --inputs, "
                         "--target-columns N with --csv, or --data")
    if data.targets is not None and data.targets.shape[0] != data.inputs.shape[0]:
        raise UsageError(f"{data.inputs.shape[0]} input rows but {data.targets.shape[0]} "
                         "target rows")
    return data


def _picture_path(path: str, require) -> None:
    """Before any work: a name ending in .svg or .png, an existing folder, and (require) the
    optional packages its format needs."""
    try:
        kind = draw.picture_format(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{path}: the folder {folder} does not exist")
    require(kind)


def _cmd_train(args) -> int:
    data = _load_data(args, targets_required=True)
    report_every = args.report_every
    if args.plot:
        _picture_path(args.plot, lambda kind: plot.require())
        report_every = report_every or plot.report_every(args.epochs)
    bar = ProgressBar(args.epochs, enabled=not args.no_progress)
    history: list = []
    with _client(args) as client:
        last = train_with_progress(client, args.model, data, bar, history=history,
                                   epochs=args.epochs, learning_rate=args.learning_rate,
                                   batch_size=args.batch_size, momentum=args.momentum,
                                   shuffle=args.shuffle, seed=args.seed,
                                   target_loss=args.target_loss, report_every=report_every)
        print(trained_line(args.model, last, args.target_loss))
        if args.plot and history:
            plot.write_training_plot(
                args.plot, history, data.inputs, data.targets,
                predict=lambda points: client.predict(args.model, points),
                title=f"model '{args.model}' trained on {data.name}")
            print(f"plotted the training in {args.plot}")
    return 0


def _row(values) -> str:
    return " ".join(explain.fmt(v) for v in np.ravel(values))


def _cmd_predict(args) -> int:
    data = _load_data(args, targets_required=False)
    with _client(args) as client:
        outputs, version = client.predict(args.model, data.inputs, with_version=True)
    if data.targets is None:
        for row in outputs:
            print(_row(row))
        return 0
    n = outputs.shape[0]
    if n <= 20:
        for x, t, y in zip(data.inputs, data.targets, outputs, strict=True):
            print(f"{_row(x)} -> {_row(y)}   (target {_row(t)})")
    accuracy = datasets.accuracy(outputs, data.targets)
    right = int(round(accuracy * n))
    print(f"accuracy {right}/{n} = {100 * accuracy:.1f}% on {data.name} (model '{args.model}' "
          f"version {version})")
    return 0


def _cmd_step(args) -> int:
    if args.learning_rate is None and not args.check_gradients:
        raise UsageError("--learning-rate is required (the article uses 0.001), unless "
                         "--check-gradients alone")
    if args.draw:
        if args.learning_rate is None:
            raise UsageError("--draw draws a step: give its --learning-rate")
        _picture_path(args.draw, lambda kind: draw.require_png() if kind == "png" else None)
    with _client(args) as client:
        model = client.get_model(args.model)
        if args.check_gradients:
            check = client.check_gradients(args.model, args.input, args.expect,
                                           epsilon=args.epsilon)
            print(explain.gradient_table(check, model))
            if args.learning_rate is None:
                return 0
            print()
        trace = client.step(args.model, args.input, args.expect, args.learning_rate,
                            dry_run=args.dry_run)
    print(explain.explain(trace, model) if args.explain else explain.table(trace))
    if args.draw:
        draw.write_step_drawing(args.draw, trace, model)
        print(f"drew the step in {args.draw}")
    return 0


def _when(t) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _cmd_models_list(args) -> int:
    with _client(args) as client:
        models = client.list_models()
    if not models:
        print("no models")
        return 0
    rows = [("ID", "LAYERS", "ACTIVATIONS", "LOSS", "VERSION", "EPOCHS", "LAST LOSS", "UPDATED")]
    for m in models:
        rows.append((m.id, "-".join(map(str, m.layer_sizes)),
                     f"{m.hidden_activation}/{m.output_activation}", m.loss, str(m.version),
                     str(m.epochs_trained), explain.fmt(m.last_loss), _when(m.update_time)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _describe(m: Model) -> list[str]:
    return [
        f"id:             {m.id}",
        f"architecture:   {m.describe()}",
        f"parameters:     {m.parameter_count}",
        f"version:        {m.version}",
        f"epochs trained: {m.epochs_trained}",
        f"iterations:     {m.iterations}",
        f"last loss:      {explain.fmt(m.last_loss)}",
        f"created:        {_when(m.create_time)}",
        f"updated:        {_when(m.update_time)}",
    ]


def _cmd_models_show(args) -> int:
    with _client(args) as client:
        m = client.get_model(args.model, include_weights=args.weights)
    lines = _describe(m)
    n = len(m.layer_sizes) - 1
    for k, (w, b) in enumerate(m.layers or ()):
        tag = "o" if k == n - 1 else ("h" if n == 2 else f"h{k + 1}")
        lines.append(f"layer {k + 1} ({tag}) weights [{w.shape[0]}, {w.shape[1]}] "
                     "(a row per neuron, a column per input):")
        lines.extend(f"  {_row(row)}" for row in w)
        if b is not None:
            lines.append(f"layer {k + 1} ({tag}) biases: {_row(b)}")
    print("\n".join(lines))
    return 0


def _cmd_models_delete(args) -> int:
    with _client(args) as client:
        client.delete_model(args.model)
    print(f"deleted model '{args.model}'")
    return 0


def _cmd_export(args) -> int:
    from . import onnx as jitnet_onnx

    if args.file is None and args.triton_repo is None:
        raise UsageError("give the .onnx file to write, or --triton-repo DIR, or both")
    jitnet_onnx.onnx_module()  # MissingDependency before any call
    with _client(args) as client:
        model = client.get_model(args.model, include_weights=True)
    batch = args.max_batch_size or jitnet_onnx.DEFAULT_MAX_BATCH_SIZE
    try:
        if args.triton_repo is not None:  # checks the name before any file is written
            jitnet_onnx.triton_config(model, args.name, max_batch_size=batch)
        if args.file is not None:
            data = jitnet_onnx.serialized(model, args.file)
            print(f"wrote {args.file}: model '{model.id}' version {model.version}, "
                  f"{len(data)} bytes")
        if args.triton_repo is not None:
            folder = jitnet_onnx.write_triton_repository(model, args.triton_repo, args.name,
                                                         max_batch_size=batch)
            print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


def _cmd_import(args) -> int:
    with _client(args) as client:
        model = client.import_onnx(args.file, args.id, output=args.output, loss=args.loss)
    print(f"created model '{model.id}' from {args.file}: {model.describe()}, "
          f"{model.parameter_count} parameters, version {model.version}")
    return 0


def _cmd_health(args) -> int:
    with _client(args) as client:
        if args.wait:
            try:
                client.wait_until_serving(args.wait, service=args.service)
            except JitnetError:
                pass  # report the status as it is now
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else EXIT_NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
