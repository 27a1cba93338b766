"""jitnet's client side: `Client` / `AsyncClient` (numpy in/out, a deadline on every call, typed
errors) and the `jitnet` command.

    client.py    Client, AsyncClient, their channel options and retry policy
    wire.py      requests built from numpy and reply messages read back (to_tensor, from_tensor)
    results.py   what calls return: Model, Progress, StepTrace, LayerStep
    errors.py    the typed errors, one per status code
    cli.py       the `jitnet` command; demo.py its `demo`, progress.py its progress bar
    explain.py   a Step's arithmetic written out as the article does
    datasets.py  built-in data sets, CSV / .npy files, the article's network

Importing any of it imports neither the service nor numba; only the `serve` and `demo`
commands load the server when they run."""

from .client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    RETRY_SERVICE_CONFIG,
    AsyncClient,
    Client,
    channel_options,
)
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
from .results import LayerStep, Model, Progress, StepTrace
from .wire import from_tensor, to_tensor

__all__ = [
    "DEFAULT_TARGET", "DEFAULT_TIMEOUT", "RETRY_SERVICE_CONFIG", "AsyncClient", "Client",
    "LayerStep", "Model", "Progress", "StepTrace", "channel_options", "from_tensor", "to_tensor",
    "Aborted", "AlreadyExists", "Cancelled", "DeadlineExceeded", "FailedPrecondition",
    "Internal", "InvalidArgument", "JitnetError", "NotFound", "PermissionDenied",
    "ResourceExhausted", "Unauthenticated", "Unavailable",
]
