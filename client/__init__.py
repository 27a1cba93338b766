"""jitnet's client side: `Client` (numpy in/out, a deadline on every call, typed errors) and the
`jitnet` command (cli.py). Nothing here imports the service or numba."""

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
