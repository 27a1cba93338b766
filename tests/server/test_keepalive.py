"""Keepalive: the client's pings stay within what the server allows, and the server notices a
vanished peer long before TCP would."""

from __future__ import annotations

from jitnet.client import channel_options
from jitnet.service.server import lifecycle as server_module


def test_client_keepalive_defaults_are_within_the_servers_ping_policy():
    server = dict(server_module.KEEPALIVE_OPTIONS)
    client = dict(channel_options())
    min_interval = server["grpc.http2.min_recv_ping_interval_without_data_ms"]
    # the client either does not ping, or pings no faster than the server allows
    assert client.get("grpc.keepalive_time_ms", min_interval) >= min_interval
    if client.get("grpc.keepalive_permit_without_calls"):
        assert server["grpc.keepalive_permit_without_calls"] == 1
    # the server notices a vanished peer within a few minutes, well before TCP would
    assert server["grpc.keepalive_time_ms"] + server["grpc.keepalive_timeout_ms"] <= 120_000
