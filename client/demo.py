"""`jitnet demo`: a server in this process, the article's step explained, then XOR trained;
at the end the step drawn and the training plotted, in the current directory or --out.

The server (and with it numba) is imported only when the demo runs, so that importing this
module, as cli.py does, stays light; matplotlib only for the training plot, which is left out
(with a note saying what to install) when matplotlib is not there.

The pictures are the README's (docs/images/): `jitnet demo --out docs/images` makes them, the
same bytes every time (tests/pictures/test_readme_images.py fails when they drift).

`jitnet demo --web` runs the same server with the playground page (docs/web.md) instead, on
127.0.0.1, and prints its address; it serves until Ctrl-C (or --seconds).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from . import datasets, draw, explain, plot
from .client import DEFAULT_TIMEOUT, Client
from .errors import AlreadyExists, JitnetError
from .progress import ProgressBar, train_with_progress, trained_line
from .results import Model

STEP_PICTURE = "article-step.svg"
TRAINING_PICTURE = "xor-training.svg"


def run(args) -> int:
    """`jitnet demo`: the server in this process on a free port, models in a temporary
    directory (or --data-dir), stopped at the end."""
    from jitnet.service import config as service_config
    from jitnet.service.server import lifecycle as service_server

    with tempfile.TemporaryDirectory(prefix="jitnet-demo-") as tmp:
        data_dir = args.data_dir or tmp
        # specialised_kernels=0: a demo of seconds would only start compiles it never uses.
        web = getattr(args, "web", False)
        cfg = service_config.Config(host="127.0.0.1", port=0, data_dir=data_dir,
                                    log_level="WARNING", specialised_kernels=0,
                                    web_port=args.web_port if web else None)
        try:
            handle = service_server.create_server(cfg)
        except RuntimeError as e:  # the page's port is taken
            raise JitnetError(str(e)) from None
        handle.start()  # answers at once; SERVING once the kernels are compiled (or cached)
        try:
            with Client(f"127.0.0.1:{handle.port}", timeout=DEFAULT_TIMEOUT) as client:
                _wait_for(handle, client)
                print(f"jitnet demo: a server on 127.0.0.1:{handle.port}, models in {data_dir}")
                if web:
                    return _serve_page(handle, args.seconds)
                return _show(client, args)
        finally:
            handle.drain(0).wait(10)


def _serve_page(handle, seconds: float | None) -> int:
    """`jitnet demo --web`: the page until Ctrl-C (or `seconds`), then the server stops."""
    until = f"for {seconds:g} s" if seconds else "Ctrl-C stops it"
    print(f"The playground: open {handle.web.url} in a browser ({until}).", flush=True)
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass  # the way to stop it
    print("Stopping the server.")
    return 0


def _wait_for(handle, client: Client, seconds: float = 300.0) -> None:
    """Until the in-process server is SERVING (a cold numba cache means compiling first)."""
    deadline = time.monotonic() + seconds
    told = False
    while True:
        try:
            client.wait_until_serving(1.0)
            return
        except JitnetError:
            problem = getattr(handle, "startup_error", None)
            if problem is not None:
                raise JitnetError(f"the server could not start: {problem}") from None
            if time.monotonic() > deadline:
                raise
            if not told:
                print("compiling the kernels (only the first run takes this long) ...",
                      file=sys.stderr)
                told = True


def _create_fresh(client: Client, model_id: str, sizes, **kwargs) -> Model:
    """Creates model_id, or a server-named model when --data-dir already holds that id."""
    try:
        return client.create_model(sizes, model_id=model_id, **kwargs)
    except AlreadyExists:
        return client.create_model(sizes, **kwargs)


def _show(client: Client, args) -> int:
    """1. the article's step explained (a dry run), 2. XOR trained and checked, 3. both
    pictured."""
    net = datasets.article()
    article = _create_fresh(client, "article", net.layer_sizes, layers=net.layers,
                            **net.architecture)
    print()
    print("1. The article's network: 2-4-1, sigmoid, no bias, its weights and its arithmetic.")
    print("   One step on input (0, 1), target 1, learning rate 0.001 (a dry run):")
    print()
    trace = client.step(article.id, [0, 1], [1], 0.001, dry_run=True)
    print("\n".join("   " + line if line else "" for line in
                    explain.explain(trace, article).splitlines()))
    os.makedirs(args.out, exist_ok=True)
    step_picture = os.path.join(args.out, STEP_PICTURE)
    draw.write_step_drawing(step_picture, trace, article)

    print()
    print("2. XOR: a fresh 2-4-1 with biases, U[0, 1) weights (seed 0), learning rate 0.5,")
    print(f"   one sample at a time, up to {args.epochs} epochs or a loss of 0.001.")
    xor = _create_fresh(client, "xor", [2, 4, 1], init="uniform", seed=0)
    data = datasets.xor()
    bar = ProgressBar(args.epochs, enabled=not args.no_progress)
    history: list = []
    last = train_with_progress(client, xor.id, data, bar, history=history, epochs=args.epochs,
                               learning_rate=0.5, target_loss=0.001,
                               report_every=plot.report_every(args.epochs))
    print("   " + trained_line(xor.id, last, 0.001))
    outputs = client.predict(xor.id, data.inputs)
    print()
    print("   x1  x2  target  output")
    right = 0
    for x, t, y in zip(data.inputs, data.targets[:, 0], outputs[:, 0], strict=True):
        ok = (y > 0.5) == (t > 0.5)
        right += ok
        print(f"   {x[0]:>2.0f}  {x[1]:>2.0f}  {t:>6.0f}  {y:.4f}  {'ok' if ok else 'WRONG'}")
    print()
    if right == len(outputs):
        print("   All four on the right side of 0.5.")
        print()
    _pictures(client, xor.id, data, history, step_picture, args)
    if right != len(outputs):
        print(f"error: only {right} of {len(outputs)} XOR outputs are on the right side of 0.5",
              file=sys.stderr)
        return 1
    print("Stopping the server.")
    return 0


def _pictures(client: Client, model_id: str, data: datasets.DataSet, history: list,
              step_picture: str, args) -> None:
    """3. The XOR training plotted beside the step drawn; says where both went."""
    training_picture = os.path.join(args.out, TRAINING_PICTURE)
    try:
        plot.write_training_plot(training_picture, history, data.inputs, data.targets,
                                 predict=lambda points: client.predict(model_id, points),
                                 title="XOR: a 2-4-1 network learning it (U[0, 1) weights, "
                                       "seed 0, learning rate 0.5)")
    except draw.MissingDependency as e:
        print(f"3. The article's step, drawn: {step_picture}")
        print(f"   The XOR training plot is left out: {e}", file=sys.stderr)
    else:
        print(f"3. Pictures: the article's step, drawn: {step_picture}")
        print(f"   XOR's loss and decision surface: {training_picture}")
    print()
