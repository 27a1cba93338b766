"""Every server setting, in one place: a flag and a `JITNET_*` environment variable each.

Precedence: a flag on the command line beats the environment, which beats the default.

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)              # `jitnet serve` does this on its subparser
    cfg = config.Config.from_namespace(parser.parse_args())
    cfg = config.Config.from_env()            # no flags: environment and defaults only

Nothing here imports grpc, numpy or numba, so the CLI can build its parser cheaply.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

MIB = 1 << 20


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message names the flag and variable."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one call may ask of the server. Checked before anything is allocated."""

    # 2M parameters: a Step reply (weights before and after, 2 x 16 MiB) fits one 64 MiB message.
    max_parameters: int = 2_000_000  # weights and biases of one model
    max_layer_width: int = 65536  # neurons in one layer (inputs and outputs included)
    max_layers: int = 64  # layers of neurons (weight matrices) in one model
    max_rows: int = 1_000_000  # rows in one Train or Predict data set
    max_work: float = 1e10  # epochs x rows in one Train call
    max_message_bytes: int = 64 * MIB  # one request or response message
    max_concurrent_calls: int = 64  # calls in flight at once (running or queued)
    # Forward passes of one CheckGradients: 2 per parameter, each as long as the parameter
    # count, so the work is quadratic: 100000 is a 50,000-parameter model, several seconds.
    max_gradient_check_passes: int = 100_000

    def hint(self, field: str) -> str:
        """`max_rows = 1000000 (--max-rows / JITNET_MAX_ROWS)`: for error messages."""
        setting = _BY_FIELD[field]
        return f"{field} = {_show(getattr(self, field))} ({setting.flag} / {setting.env})"


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 50051  # 0: any free port (tests)
    data_dir: str = "./jitnet-data"
    workers: int = 1  # server processes on the port (server/workers.py); `auto`: one per core
    threads: int = 8  # threads serving calls, in each server process
    grace_seconds: float = 10.0  # on SIGTERM, how long calls in flight may take to finish
    limits: Limits = dataclasses.field(default_factory=Limits)
    tls_cert: str | None = None  # PEM files; TLS is served when both are set
    tls_key: str | None = None
    auth_token: str | None = None  # when set, calls need `authorization: Bearer <token>`
    log_level: str = "INFO"
    refresh_seconds: float = 0.5  # file store: how stale another process's commit may look
    # Where the models are: a directory, a file: URL or a postgresql:// DSN. None: data_dir.
    store: str | None = None
    lease_seconds: float = 10.0  # PostgreSQL store: a dead holder's lease frees within this
    store_poll_seconds: float = 5.0  # PostgreSQL store: the backstop re-read of every version
    # Observability (docs/operations.md): all off by default.
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on host:metrics_port
    access_log: bool = False  # one log line per call, with a request id
    log_format: str = "text"  # or "json", one object per line
    tracing: bool = False  # OpenTelemetry spans (pip install 'jitnet[otel]')
    kernel_dir: str | None = None  # specialised kernels' source and cache; None: the default
    specialised_kernels: int = 32  # architectures served with specialised kernels at once
    specialise_after_predicts: int = 1000  # tier-0 Predicts of an architecture that trigger it
    specialise_at_start: int = 32  # stored models' architectures specialised at start
    # The playground page (docs/web.md): off unless a port is given; this machine only unless
    # a host says otherwise.
    web_port: int | None = None
    web_host: str = "127.0.0.1"

    def __post_init__(self):
        for setting in SETTINGS:
            owner = self.limits if setting.in_limits else self
            if setting.check is not None:
                problem = setting.check(getattr(owner, setting.field))
                if problem:
                    raise ConfigError(f"{setting.flag} / {setting.env}: {problem}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both --tls-cert / JITNET_TLS_CERT and "
                              "--tls-key / JITNET_TLS_KEY, or neither")

    @property
    def address(self) -> str:
        """host:port for binding, with IPv6 hosts bracketed."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def store_location(self) -> str:
        """What open_store takes: --store when set, else the --data-dir directory."""
        return self.store or self.data_dir

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    def to_env(self) -> dict[str, str]:
        """Every setting as its JITNET_* variable: what from_env reads back as this Config
        (how the parent of several workers hands them its settings, flags included)."""
        env = {}
        for setting in SETTINGS:
            value = getattr(self.limits if setting.in_limits else self, setting.field)
            env[setting.env] = "" if value is None else (repr(value) if isinstance(value, float)
                                                         else str(value))
        return env

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace | None,
                       env: Mapping[str, str] | None = None) -> Config:
        """Flags (attributes of `ns` that are not None) over `env` (default os.environ) over
        the defaults. Raises ConfigError naming the flag and variable of a bad value."""
        env = os.environ if env is None else env
        top: dict[str, Any] = {}
        limits: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(ns, setting.dest, None) if ns is not None else None
            if value is None and env.get(setting.env, "") != "":
                raw = env[setting.env]
                try:
                    value = setting.parse(raw)
                except ValueError:
                    raise ConfigError(f"{setting.env}={raw!r} is not a valid {setting.kind} "
                                      f"for {setting.flag}") from None
            if value is not None:
                (limits if setting.in_limits else top)[setting.field] = value
        return cls(limits=Limits(**limits), **top)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        return cls.from_namespace(None, env)


# ---------------------------------------------------------------------------------------------
# The settings table: one row per setting, driving flags, environment and validation.


class Setting(NamedTuple):
    field: str
    parse: Callable[[str], Any]
    kind: str
    help: str
    in_limits: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return "JITNET_" + self.field.upper()

    @property
    def dest(self) -> str:
        # A prefix keeps our namespace attributes apart from the CLI's own on a shared parser.
        return "jitnet_" + self.field


def _at_least(low):
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def _number(raw: str) -> float:
    return float(raw.replace("_", ""))


def _integer(raw: str) -> int:
    value = float(raw.replace("_", ""))  # accepts 1e7 as well as 10000000
    if value != int(value):
        raise ValueError(raw)
    return int(value)


def _optional_text(raw: str) -> str | None:
    return raw or None


def _on_off(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(raw)
    return value


def _port_or_off(value: int | None) -> str | None:
    return None if value is None or 0 <= value <= 65535 else f"must be 0..65535, got {value}"


def _workers(raw: str) -> int:
    """A number of processes, or `auto`: the cores this process may run on."""
    if raw.strip().lower() == "auto":
        return available_cores()
    return int(raw)


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container's --cpus) when there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as quota_file:
            quota, period = quota_file.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(raw)
    return level


def _known_store(location: str | None) -> str | None:
    if location and "://" in location and not location.startswith(
            ("file:", "postgresql://", "postgres://")):
        scheme = location.split("://", 1)[0]  # never the rest: a DSN carries a password
        return (f"{scheme}:// is not a store this server knows: give a directory, a file: URL "
                "or a postgresql:// DSN")
    return None


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "host", "address to listen on (default 0.0.0.0: every interface)"),
    Setting("port", int, "port", "port to listen on; 0 picks a free one (default 50051)",
            check=lambda v: None if 0 <= v <= 65535 else f"must be 0..65535, got {v}"),
    Setting("data_dir", str, "path", "directory holding the models (default ./jitnet-data); "
            "several servers may share one"),
    Setting("workers", _workers, "integer or auto", "server processes sharing the port, under a "
            "parent that restarts them; auto: one per available core (default 1)",
            check=_at_least(1)),
    Setting("threads", int, "integer", "threads serving calls in each server process "
            "(default 8)", check=_at_least(1)),
    Setting("grace_seconds", _number, "number", "on SIGTERM, seconds calls in flight get to "
            "finish before they are cut (default 10)", check=_at_least(0)),
    Setting("tls_cert", _optional_text, "path", "PEM certificate chain; with --tls-key, serve TLS"),
    Setting("tls_key", _optional_text, "path", "PEM private key; with --tls-cert, serve TLS"),
    Setting("auth_token", _optional_text, "text", "when set, calls need the metadata "
            "`authorization: Bearer <token>` (health and reflection excepted)"),
    Setting("log_level", _log_level, "level", "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    Setting("refresh_seconds", _number, "number", "how often a cached model is checked against "
            "its file, for servers sharing a data directory (default 0.5)", check=_at_least(0)),
    Setting("store", _optional_text, "location", "where the models are: a directory or file: "
            "URL (the embedded file store), or a postgresql://user:password@host:port/db DSN "
            "shared by servers on many hosts (default: the --data-dir directory; set, it "
            "replaces --data-dir). Prefer the variable for a DSN with a password",
            check=_known_store),
    Setting("lease_seconds", _number, "number", "PostgreSQL store: a server that dies while "
            "changing a model frees the model at most this long after (default 10)",
            check=_at_least(0.5)),
    Setting("store_poll_seconds", _number, "number", "PostgreSQL store: how often every model's "
            "version is re-read, in case a change notice was lost (default 5)",
            check=_at_least(0.1)),
    Setting("metrics_port", int, "port", "serve Prometheus metrics over HTTP at "
            "http://HOST:PORT/metrics; 0 picks a free one (default: no metrics)",
            check=_port_or_off),
    Setting("access_log", _on_off, "on/off", "one log line per call (method, status, duration, "
            "peer, model, rows, request id from x-request-id or made up) (default off)"),
    Setting("log_format", _log_format, "format", "text (default) or json: one JSON object per "
            "line, for log shippers"),
    Setting("tracing", _on_off, "on/off", "an OpenTelemetry span per call, exported as the "
            "standard OTEL_* variables say; needs pip install 'jitnet[otel]' (default off)"),
    Setting("kernel_dir", _optional_text, "path", "directory of the kernels specialised per "
            "architecture (generated source and numba's cache), shared by the workers and "
            "servers of a machine (default ~/.cache/jitnet/kernels)"),
    Setting("specialised_kernels", _integer, "integer", "most architectures served with "
            "specialised kernels at once, least recently used out; 0: generic kernels only "
            "(default 32)", check=_at_least(0)),
    Setting("specialise_after_predicts", _integer, "integer", "Predicts of an architecture on "
            "the generic kernels after which it is specialised (a Train does it at once; "
            "default 1000)", check=_at_least(1)),
    Setting("specialise_at_start", _integer, "integer", "stored models' architectures "
            "specialised (loaded from the cache, or compiled) at start (default 32)",
            check=_at_least(0)),
    Setting("web_port", int, "port", "serve the playground page and its JSON API over HTTP "
            "on --web-host:PORT, a client of this server's gRPC port; 0 picks a free one "
            "(default: no page)", check=_port_or_off),
    Setting("web_host", str, "host", "address the page listens on (default 127.0.0.1: this "
            "machine only; anything else lets other machines train your models: set "
            "--auth-token)"),
    Setting("max_parameters", _integer, "integer", "most weights and biases in one model "
            "(default 2000000)", in_limits=True, check=_at_least(1)),
    Setting("max_layer_width", _integer, "integer", "most neurons in one layer (default 65536)",
            in_limits=True, check=_at_least(1)),
    Setting("max_layers", _integer, "integer", "most layers of neurons in one model (default 64)",
            in_limits=True, check=_at_least(1)),
    Setting("max_rows", _integer, "integer", "most rows in one Train or Predict (default 1000000)",
            in_limits=True, check=_at_least(1)),
    Setting("max_work", _number, "number", "most epochs x rows in one Train call (default 1e10)",
            in_limits=True, check=_at_least(1)),
    Setting("max_message_bytes", _integer, "integer", "largest request or response message in "
            "bytes (default 64 MiB)", in_limits=True, check=_at_least(1024)),
    Setting("max_concurrent_calls", _integer, "integer", "most calls in flight at once; more "
            "get RESOURCE_EXHAUSTED (default 64)", in_limits=True, check=_at_least(1)),
    Setting("max_gradient_check_passes", _integer, "integer", "most forward passes of one "
            "CheckGradients, two per parameter of the model (default 100000)", in_limits=True,
            check=_at_least(2)),
)
_BY_FIELD = {s.field: s for s in SETTINGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting. Flags default to None, so `from_namespace` can tell a flag
    given on the command line from one left to the environment or the default."""
    group = parser.add_argument_group("server settings (each also a JITNET_* variable)")
    for setting in SETTINGS:
        # An on/off setting given as a bare flag (`--access-log`) turns it on.
        switch = dict(nargs="?", const=True) if setting.parse is _on_off else {}
        group.add_argument(setting.flag, dest=setting.dest, type=setting.parse, default=None,
                           metavar=setting.kind.upper().replace(" OR ", "|"),
                           help=f"{setting.help} [{setting.env}]", **switch)
