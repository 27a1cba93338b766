"""The server's log lines: human-readable text (default) or one JSON object per line, the
access log (logger `jitnet.access`), and the request id that ties a call's lines together.

With the access log on, each call has a request id: the client's `x-request-id` metadata when
it sends a usable one (1-128 visible ASCII characters), else one made up; it is returned in the
trailing metadata, and every log line written while the call runs carries it (text: a trailing
`request_id=...`; JSON: a "request_id" key), protocols/status.py's INTERNAL incidents included.
It lives in a context variable: grpc runs each call in a contextvars.Context of its own.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import secrets
import sys

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("jitnet_request_id",
                                                                        default=None)
ACCESS = logging.getLogger("jitnet.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_USABLE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII: nothing that forges a line


def configure(level: str, log_format: str = "text", who: str = "") -> None:
    """Logs to stderr in the chosen format, unless the process set up logging already; `who`
    (a worker's name, server/workers.py) goes into every line."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(who) if log_format == "json" else TextFormatter(who))
        root.addHandler(handler)
    root.setLevel(level)


def request_id(metadata) -> str:
    """The call's x-request-id when usable, else a new one (16 hex digits)."""
    for key, value in metadata or ():
        if key == "x-request-id":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if _USABLE_ID.fullmatch(value):
                return value
            break
    return secrets.token_hex(8)


def enable_request_ids() -> None:
    """Every log record from now on gets `request_id`: the running call's, or None."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "jitnet_request_ids", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory.jitnet_request_ids = True
    logging.setLogRecordFactory(factory)


def enable_access_log() -> None:
    """Access lines are INFO; they show whatever --log-level says for the other loggers."""
    enable_request_ids()
    ACCESS.setLevel(logging.INFO)


def access(method: str, code: str, seconds: float, peer: str, model_id: str | None,
           rows: int | None, messages: int | None = None, trace_id: str | None = None) -> None:
    """One access line (call it while the call's request id is set)."""
    fields = {"method": method, "code": code, "duration_ms": round(seconds * 1e3, 3),
              "peer": peer, "model_id": model_id, "rows": rows}
    if messages is not None:  # a stream: the messages it sent
        fields["messages"] = messages
    if trace_id is not None:
        fields["trace_id"] = trace_id
    text = f"{method} {code} {fields['duration_ms']:g} ms peer={peer}"
    if model_id is not None:
        text += f" model={model_id}"
    if rows is not None:
        text += f" rows={rows}"
    if messages is not None:
        text += f" messages={messages}"
    if trace_id is not None:
        text += f" trace_id={trace_id}"
    ACCESS.info(text, extra={"access": fields})


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message request_id=...` (the id only inside a call)."""

    def __init__(self, who: str = ""):
        super().__init__(TEXT_FORMAT.replace("%(name)s", f"{who} %(name)s") if who
                         else TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        return f"{text} request_id={rid}" if rid else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id when
    inside a call, the access fields on access lines, exception with its traceback; `worker`
    in a worker's lines."""

    def __init__(self, who: str = ""):
        super().__init__()
        self._who = who

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._who:
            out["worker"] = self._who
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "access", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)
