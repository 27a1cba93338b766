"""The hosts of tests/hosts (topology.py): made once for the module, checked healthy before
each test (links up, replicas SERVING, nginx running), removed afterwards with nothing left."""

from __future__ import annotations

import pytest

from ..support.waiting import wait_for
from .topology import SERVING, Network, health, skip_unless_usable, start_hosts

# A dead holder's lease frees within this (the server's --lease-seconds; 10 s by default).
LEASE_SECONDS = 6.0


@pytest.fixture(scope="module")
def network():
    skip_unless_usable()
    net = Network.create()
    yield net
    net.remove()
    assert net.leftovers() == [], f"left behind: {net.leftovers()}"


@pytest.fixture(scope="module")
def topology(network, tmp_path_factory, warmed):
    hosts = start_hosts(network, tmp_path_factory.mktemp("hosts"),
                        "--lease-seconds", str(LEASE_SECONDS))
    yield hosts
    hosts.stop()


@pytest.fixture
def hosts(topology):
    """The topology as each test expects to find it: every link up, both replicas and nginx
    running and SERVING (a test that cut or killed something restores it here too)."""
    for host in ("db", "a", "b", "lb"):
        topology.net.restore(host)
    for replica in topology.replicas.values():
        if not replica.process.alive():
            replica.start()
        replica.wait_serving()
    assert topology.balancer.process.alive(), topology.balancer.process.log
    wait_for(lambda: health(topology.lb) == SERVING, 30, what="SERVING through nginx",
             interval=0.05)
    yield topology
    for host in ("db", "a", "b", "lb"):
        topology.net.restore(host)
