"""Helpers shared by the client tests: start a server on 127.0.0.1 port 0, the article's weights.

The real server (service/server.py `create_server`), in-process. `JITNET_CLIENT_TESTS_FAKE=1`
swaps in the small fake of fake_network_service.py, to tell a client bug from a server one.
"""

from __future__ import annotations

import os

import pytest

from jitnet.client import Client

ARTICLE_HIDDEN = [[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]]
ARTICLE_OUTPUT = [[0.6, 0.7, 0.3, 0.4]]


def _real_server():
    """(config, server) modules of the real server, or None when the fake is asked for."""
    if os.environ.get("JITNET_CLIENT_TESTS_FAKE") == "1":
        return None
    from jitnet.service import config, server

    return config, server


class Running:
    def __init__(self, server, port, real: bool):
        self.server, self.port, self.real = server, port, real
        self.address = f"127.0.0.1:{port}"

    def stop(self):
        self.server.stop(None)


def start_server(data_dir, client_options=None, **settings) -> Running:
    """A started server on 127.0.0.1:0, SERVING. `settings` go to the real server's Config;
    `client_options` to the Client that waits for it (e.g. root_certificates for TLS)."""
    real = _real_server()
    if real is not None:
        config, server_module = real
        cfg = config.Config(host="127.0.0.1", port=0, data_dir=str(data_dir),
                            log_level="WARNING", **settings)
        handle = server_module.create_server(cfg).start()  # .start() also warms up
        running = Running(handle.server, handle.port, True)
    else:
        if settings:
            pytest.skip("needs the real server (service/server.py)")
        import fake_network_service

        server, port = fake_network_service.create_server()
        running = Running(server, port, False)
    with Client(running.address, **(client_options or {})) as client:
        client.wait_until_serving(120.0)
    return running
