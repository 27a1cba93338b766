"""The page's HTTP server: the static files of the page and the JSON API (api.py), on threads
of the standard library's ThreadingHTTPServer, beside the gRPC server whose port it calls.

What it guards, for every request:

  * the Host header names this server (127.0.0.1, localhost, ::1 or --web-host), so that a
    page of another site cannot reach it through DNS rebinding (403 otherwise; not checked when
    --web-host is a wildcard such as 0.0.0.0, where the token is the guard);
  * a request that changes something (POST, PUT, PATCH, DELETE) has `Content-Type:
    application/json` (415 otherwise: a cross-site form cannot post JSON, and a cross-site
    fetch of JSON needs a CORS preflight this server never grants), an Origin, when sent, of
    this server (403), a Content-Length (411) of at most MAX_BODY_BYTES (413);
  * the page's `Authorization: Bearer TOKEN` goes on to the gRPC server with each call, which
    answers UNAUTHENTICATED (401 here) when it wants another;
  * the page is served with a Content-Security-Policy that runs only its own scripts and
    renders nothing it did not ship (the page sets text only, never HTML).

Train answers as newline-delimited JSON (`application/x-ndjson`, chunked), one line per
progress message, as the server commits. When the page goes away (pause, reload, closed tab)
its connection closes; a watcher thread sees the socket's end and cancels the gRPC call, so
Train stops at its next chunk and the model keeps its last committed version.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import select
import socket
import socketserver
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from jitnet.client import DEFAULT_TIMEOUT, Client, JitnetError

from ..config import Config
from . import api
from .calls import Forwarding, Scope
from .http_status import BadRequest, HttpError, from_call

_LOGGER = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_BODY_BYTES = 4 << 20  # a request's body: a pasted CSV of about 100,000 numbers fits
IDLE_SECONDS = 60.0  # a connection that sends nothing this long is closed
WATCH_SECONDS = 0.2  # how often a stream's watcher looks whether the page is still there
# Closing: what the client still sends (a body refused unread) is read for this long, up to
# this much, so that the close sends FIN and not RST, which can drop the answer unread.
LINGER_SECONDS = 0.5
LINGER_BYTES = 1 << 20
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
CHANGES = ("POST", "PUT", "PATCH", "DELETE")

HEADERS = {  # on every answer
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".ico": "image/x-icon"}


def grpc_target(config: Config, grpc_port: int) -> str:
    """Where the page's API calls the server, over loopback when it listens everywhere."""
    host = config.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{grpc_port}"


def for_config(config: Config, grpc_port: int) -> WebServer | None:
    """The page of a server on `grpc_port`, bound to --web-host:--web-port (not yet serving:
    start() it), or None when --web-port is not set. OSError when the port is taken."""
    if config.web_port is None:
        return None
    return WebServer(config.web_host, config.web_port, grpc_target(config, grpc_port),
                     token_required=bool(config.auth_token),
                     tls_root=config.tls_cert if config.tls else None)


class WebServer:
    """The page and its API on host:port (port 0: a free one), calling gRPC at grpc_target.
    Binds at once; start() serves on a thread of its own; close() stops it."""

    def __init__(self, host: str, port: int, grpc_target: str, *, token_required: bool = False,
                 tls_root: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.forwarding = Forwarding()
        self.client = Client(grpc_target, timeout=timeout, tls=tls_root is not None,
                             root_certificates=tls_root, interceptors=[self.forwarding])
        self.api = api.Api(self.client, grpc_target=grpc_target, token_required=token_required)
        self.files = _static_files(STATIC)
        self.host = host
        server_class = _HttpServer6 if ":" in host else _HttpServer
        try:
            self._httpd = server_class((host.strip("[]"), port), _Handler)
        except OSError:
            self.client.close()
            raise
        self._httpd.web = self
        self.port = self._httpd.server_address[1]
        self.names = None if host in WILDCARD_HOSTS else {*LOCAL_NAMES, host.strip("[]").lower()}
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:" \
               f"{self.port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                        name="jitnet-web", daemon=True)
        self._thread.start()
        return self

    def stop_listening(self) -> None:
        """No new requests (the port closes); requests in flight go on."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def close(self) -> None:
        """Stops listening and closes the gRPC channel (which ends the page's calls)."""
        if self._closed:
            return
        self._closed = True
        self.stop_listening()
        self.client.close()


def _static_files(folder: Path) -> dict[str, tuple[bytes, str]]:
    """URL path -> (bytes, content type) for every file shipped in the static folder, read
    once: the only paths served outside /api/, so no request can name another file."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            kind = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
            files["/" + path.relative_to(folder).as_posix()] = (path.read_bytes(),
                                                                kind or "application/octet-stream")
    files["/"] = files["/index.html"]
    return files


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a page's open stream never holds the process
    web: WebServer

    def server_bind(self):
        # HTTPServer.server_bind looks the host's name up (getfqdn), which can wait on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def shutdown_request(self, request):
        try:
            request.shutdown(socket.SHUT_WR)  # the answer is all sent
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                request.settimeout(wait)
                data = request.recv(min(left, 65536))
                if not data:
                    break  # the client closed too
                left -= len(data)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request, client_address):
        _LOGGER.debug("connection from %s ended with an error", client_address, exc_info=True)


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _incident(exc: BaseException) -> HttpError:
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error("page API: internal error, incident %s", incident, exc_info=exc)
    return HttpError(HTTPStatus.INTERNAL_SERVER_ERROR,
                     f"internal error in the page's API (incident {incident}); the server's "
                     "log has the details", "INTERNAL")


def _http_error(exc: Exception) -> HttpError:
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, JitnetError):
        return from_call(exc)
    return _incident(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the page asks several times a second
    server_version = "jitnet-web"
    sys_version = ""
    timeout = IDLE_SECONDS
    server: _HttpServer

    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        _LOGGER.debug("%s %s", self.address_string(), format % args)

    # -- one request ---------------------------------------------------------------------------

    def _serve(self) -> None:
        self._body_read = self.command in ("GET", "HEAD", "OPTIONS") and not self.headers.get(
            "Content-Length", "").strip("0 ")
        try:
            self._check_host()
            url = urlsplit(self.path)
            if url.path.startswith("/api/"):
                self._api(url.path, dict(parse_qsl(url.query)))
            else:
                self._static(url.path)
        except HttpError as e:
            self._send_json(e.to_json(), e.status, e.headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the page went away mid-answer

    def _check_host(self) -> None:
        names = self.server.web.names
        if names is None:
            return
        host = urlsplit("//" + self.headers.get("Host", "")).hostname or ""
        if host.lower() not in names:
            raise HttpError(HTTPStatus.FORBIDDEN,
                            f"the Host header {self.headers.get('Host', '')!r} is not this "
                            f"server's name; open {self.server.web.url}", "WRONG_HOST")

    def _static(self, path: str) -> None:
        if self.command not in ("GET", "HEAD"):
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED,
                            f"{self.command} {path}: the page's files are only read (GET)",
                            headers={"Allow": "GET, HEAD"})
        found = self.server.web.files.get(path)
        if found is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        data, kind = found
        self.send_response(HTTPStatus.OK)
        self._headers({"Content-Type": kind, "Content-Length": str(len(data)),
                       "Cache-Control": "no-cache"})
        if self.command != "HEAD":
            self.wfile.write(data)

    def _api(self, path: str, query: dict[str, str]) -> None:
        body = self._read_body() if self.command in CHANGES else {}
        handler, params = api.route("GET" if self.command == "HEAD" else self.command, path)
        request = api.Request(self.command, path, query, body, params)
        with self.server.web.forwarding.scope(self._token()) as scope:
            try:
                if handler in api.STREAMING:
                    self._stream(handler(self.server.web.api, request), scope)
                    return
                answer = handler(self.server.web.api, request)
            except Exception as exc:  # noqa: BLE001 - every error answers with its status
                raise _http_error(exc) from None
        self._send_json(answer.value, answer.status)

    def _token(self) -> str | None:
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        return (token.strip() or None) if scheme.lower() == "bearer" else None

    def _read_body(self) -> dict:
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host", ""):
            raise HttpError(HTTPStatus.FORBIDDEN, f"a request from the page of {origin} is "
                            "not this server's page; it may not change anything here",
                            "WRONG_ORIGIN")
        media = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"{self.command} needs the header Content-Type: application/json "
                            f"and a JSON body (got {media or 'no Content-Type'})")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, "
                            "not chunked")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, f"{self.command} needs a Content-Length")
        if length > MAX_BODY_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"the body is {length} bytes; this API takes at most "
                            f"{MAX_BODY_BYTES} (a smaller data set, or the gRPC API for more)")
        raw = self.rfile.read(length)
        self._body_read = True
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object, {...}")
        return body

    # -- answers -------------------------------------------------------------------------------

    def _headers(self, headers: dict[str, str]) -> None:
        if not self._body_read:  # an unread body would be read as the next request
            self.close_connection = True
        for name, value in {**HEADERS, **headers}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_json(self, value: dict, status: HTTPStatus, headers: dict | None = None) -> None:
        data = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        self.send_response(status)
        self._headers({"Content-Type": "application/json; charset=utf-8",
                       "Content-Length": str(len(data)), "Cache-Control": "no-store",
                       **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(data)

    def _chunk(self, value: dict) -> None:
        line = json.dumps(value, allow_nan=False, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def _stream(self, lines, scope: Scope) -> None:
        """The first line is taken before anything is sent, so an error before it (no such
        model, a busy one, bad data) answers with its own status; one after it is the last
        line, {"error": {...}}. A page that goes away cancels the call."""
        watcher = _Watcher(self.connection, scope)
        watcher.start()
        try:
            try:
                first = next(lines, None)
            except Exception as exc:  # noqa: BLE001 - every error answers with its status
                if scope.cancelled.is_set():
                    self.close_connection = True
                    return
                raise _http_error(exc) from None
            self.send_response(HTTPStatus.OK)
            self._headers({"Content-Type": "application/x-ndjson", "Cache-Control": "no-store",
                           "Transfer-Encoding": "chunked", "X-Accel-Buffering": "no"})
            try:
                if first is not None:
                    self._chunk(first)
                    for line in lines:
                        self._chunk(line)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                raise
            except Exception as exc:  # noqa: BLE001 - told as the stream's last line
                if scope.cancelled.is_set():
                    self.close_connection = True
                    return
                self._chunk(_http_error(exc).to_json())
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            scope.cancel()
            self.close_connection = True
        finally:
            watcher.stop()
            lines.close()  # cancels the call if it is still open


class _Watcher(threading.Thread):
    """Watches a streaming answer's connection: when the page closes it (the socket reads
    its end), cancels the request's calls. The page sends nothing while it reads a stream, so
    any byte to read means the end or a reset."""

    def __init__(self, connection: socket.socket, scope: Scope):
        super().__init__(name="jitnet-web-watch", daemon=True)
        self._connection = connection
        self._scope = scope
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join(1.0)

    def run(self) -> None:
        while not self._done.is_set():
            try:
                readable, _, _ = select.select([self._connection], [], [], WATCH_SECONDS)
                if not readable:
                    continue
                if self._connection.recv(1, socket.MSG_PEEK):
                    return  # bytes, not the end: the page is there (writes will tell)
            except (OSError, ValueError):
                pass  # reset, or closed under us: gone all the same
            if not self._done.is_set():
                self._scope.cancel()
            return
