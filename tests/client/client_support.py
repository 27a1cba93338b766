"""Helpers shared by the client tests: a real server (service/server.py) in-process on
127.0.0.1 port 0, and the article's weights."""

from __future__ import annotations

from jitnet.client import Client
from jitnet.service import config, server

ARTICLE_HIDDEN = [[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]]
ARTICLE_OUTPUT = [[0.6, 0.7, 0.3, 0.4]]


class Running:
    def __init__(self, handle):
        self.handle, self.port = handle, handle.port
        self.address = f"127.0.0.1:{handle.port}"

    def stop(self):
        self.handle.server.stop(None)


def start_server(data_dir, client_options=None, **settings) -> Running:
    """A started server on 127.0.0.1:0, SERVING. `settings` go to its Config; `client_options`
    to the Client that waits for it (e.g. root_certificates for TLS)."""
    cfg = config.Config(host="127.0.0.1", port=0, data_dir=str(data_dir), log_level="WARNING",
                        **settings)
    running = Running(server.create_server(cfg).start())  # .start() also warms up
    with Client(running.address, **(client_options or {})) as client:
        client.wait_until_serving(120.0)
    return running
