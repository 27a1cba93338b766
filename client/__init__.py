"""jitnet's client side: `Client` / `AsyncClient` (numpy in/out, a deadline on every call, typed
errors) and the `jitnet` command.

    client.py    Client, AsyncClient, their channel options and retry policy
    wire.py      requests built from numpy and reply messages read back (to_tensor, from_tensor)
    results.py   what calls return: Model, Progress, StepTrace, LayerStep, GradientCheck
    errors.py    the typed errors, one per status code
    cli.py       the `jitnet` command; demo.py its `demo`, progress.py its progress bar
    explain.py   a Step's arithmetic written out as the article does; a gradient check's table
    draw.py      a Step drawn as SVG (step_svg), or PNG; plot.py the training plot (matplotlib)
    datasets.py  built-in data sets, CSV / .npy files, the article's network
    onnx.py      ONNX export (and a Triton model repository) and import; interchange.py the
                 NetworkSpec importers produce; sklearn.py fitted MLPs in, the estimators

Importing any of it imports neither the service nor numba; only the `serve` and `demo`
commands load the server when they run. matplotlib and cairosvg (`pip install 'jitnet[plot]'`)
are imported only when a plot or a PNG drawing is made; onnx (`jitnet[onnx]`) only by ONNX
export and import, scikit-learn (`jitnet[sklearn]`) only by client/sklearn.py."""

from .client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    RETRY_SERVICE_CONFIG,
    AsyncClient,
    Client,
    channel_options,
)
from .draw import MissingDependency, step_svg, write_step_drawing
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    JitnetError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .plot import write_training_plot
from .results import GradientCheck, LayerGradients, LayerStep, Model, Progress, StepTrace
from .wire import from_tensor, to_tensor

__all__ = [
    "DEFAULT_TARGET", "DEFAULT_TIMEOUT", "RETRY_SERVICE_CONFIG", "AsyncClient", "Client",
    "GradientCheck", "LayerGradients", "LayerStep", "MissingDependency", "Model", "Progress",
    "StepTrace", "channel_options", "from_tensor", "step_svg", "to_tensor", "write_step_drawing",
    "write_training_plot",
    "Aborted", "AlreadyExists", "Cancelled", "DeadlineExceeded", "FailedPrecondition",
    "Internal", "InvalidArgument", "JitnetError", "NotFound", "PermissionDenied",
    "ResourceExhausted", "Unauthenticated", "Unavailable",
]
