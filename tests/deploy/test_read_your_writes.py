"""Read your writes through nginx on the file store (the compose topology on loopback,
tests/support/topology.py): one client trains and predicts in a tight loop, nginx sends its
calls to both replicas in turn, and it never reads a version older than its own last commit.

The replicas re-check their files only every 30 s here, so the replica that did not run the
Train is stale for certain: the control shows what a read without min_version gets.
(PostgreSQL through nginx: tests/hosts/test_hosts.py.)
"""

from __future__ import annotations

import pytest

from jitnet.client import Client, datasets
from tests.support.topology import start_stack

X, Y, _ = datasets.xor()


@pytest.fixture
def slow_stack(tmp_path, warmed):
    running = start_stack(tmp_path, "--refresh-seconds", "30")
    yield running
    running.stop()


@pytest.mark.slow
def test_one_client_never_reads_older_than_its_last_commit_through_nginx(slow_stack):
    older, stale_without = [], 0
    with Client(slow_stack.target, timeout=20) as client:
        client.create_model([2, 4, 1], seed=1, model_id="ryw")
        for k in range(30):
            last = [p.version for p in client.train("ryw", X, Y, epochs=2,
                                                    learning_rate=0.5)][-1]
            # The control first: any version, from whichever replica nginx picks.
            _, any_version = client.predict("ryw", X, with_version=True, min_version=0)
            stale_without += any_version < last
            for _ in range(2):  # both replicas, in nginx's turn
                _, seen = client.predict("ryw", X, with_version=True)
                if seen < last:
                    older.append((k, seen, last))
    assert older == []
    assert stale_without > 0  # without min_version the other replica answered an older one
    served = slow_stack.nginx.served("Predict")
    assert len(served) == 2 and min(served.values()) >= 30, served  # both replicas answered
