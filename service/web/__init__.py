"""The playground page: its static files and JSON API, a client of the server's gRPC port.

    server.py       the HTTP server (standard library): statics, guards, streams, cancellation
    api.py          the routes, each a few jitnet Client calls
    calls.py        the page's token on each call, its streams cancellable from another thread
    http_status.py  the one table from gRPC status to HTTP status, and the API's errors
    datasets.py     XOR, generated 2-D sets (circle, moons, spiral, clusters), pasted CSV
    static/         the page: HTML, CSS, ES modules (SVG and canvas), no build step

server/ starts it (`--web-port`): lifecycle.py beside a single server, workers.py in the parent
of several, which calls the shared port. docs/web.md is the user's guide.
"""

from .server import WebServer, for_config, grpc_target

__all__ = ["WebServer", "for_config", "grpc_target"]
