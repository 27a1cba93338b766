"""loadtest/locustfile.py, headless and bounded, through nginx to the two real replicas."""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import pytest

from jitnet.client import Client
from tests.support.servers import ROOT

pytestmark = pytest.mark.slow

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"

# A floor far below what this 2-core box does (~5,000 calls in 6 s with 4 users, ~1k calls/s):
# it catches a locustfile whose users stall or die, not a slow machine.
MIN_REQUESTS = 300


def _stats(prefix: pathlib.Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_locust_runs_clean_through_nginx_to_both_replicas(stack, tmp_path):
    prefix = tmp_path / "locust"
    mark = len(stack.nginx.entries())
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
         "-u", "4", "-r", "4", "-t", "6s", "--host", stack.target,
         "--only-summary", "--exit-code-on-error", "1", "--csv", str(prefix),
         "--loglevel", "WARNING"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output

    stats = _stats(prefix)
    total = stats["Aggregated"]
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert int(total["Failure Count"]) == 0 and failures == [], (failures, output)
    assert int(total["Request Count"]) >= MIN_REQUESTS, output
    counts = {name: int(row["Request Count"]) for name, row in stats.items()}
    assert counts.get("Train", 0) > 0 and counts.get("Step", 0) > 0, counts
    assert counts["Predict"] > counts["Step"] + counts["Train"], "the mix is Predict-heavy"

    # Both replicas carried the load, and no call failed between nginx and a replica.
    for method in ("Predict", "Step", "Train"):
        served = stack.nginx.served(method, since=mark)
        assert len(served) == 2, (method, served)
        assert stack.nginx.failed(method, since=mark) == [], method
    # Every user deleted its model when it stopped.
    with Client(stack.target, timeout=20) as client:
        assert not [m.id for m in client.list_models() if m.id.startswith("locust-")]
