"""deploy/k8s/kserve/check.py passes on the committed manifests and fails, naming the problem,
on each mistake its README says it catches (run as a subprocess on copies in tmp_path)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

KSERVE = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "kserve"


def run_check(folder: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(folder / "check.py")], capture_output=True,
                          text=True, timeout=120)


def test_the_committed_manifests_pass():
    out = run_check(KSERVE)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("file, old, new, words", [
    ("servingruntime.yaml", "name: h2c", "name: grpc", "no container port named h2c"),
    ("servingruntime.yaml", "readinessProbe:", "readinesProbe:", "'readinesProbe' was unexpected"),
    ("servingruntime.yaml", "--port 8081", "--port 8082", "jitnet listens on 8082"),
    ("servingruntime.yaml", "- grpc-v2", "- v2", "protocolVersions lacks grpc-v2"),
    ("servingruntime.yaml", "--grace-seconds 20", "--grace-seconds -1", "--grace-seconds"),
    ("servingruntime.yaml", "--host 0.0.0.0", "--host 127.0.0.1", "listens on 127.0.0.1"),
    ("servingruntime.yaml", "mountPath: /data", "mountPath: /var/data", "not a mounted"),
    ("servingruntime.yaml", "port: 8081\n        periodSeconds", "port: 9\n        periodSeconds",
     "readiness probe asks gRPC port 9"),
    ("inferenceservice.yaml", "runtime: jitnet", "runtime: jitnt", "runtime 'jitnt'"),
    ("inferenceservice.yaml", "protocolVersion: grpc-v2", "protocolVersion: v2",
     "protocolVersion is not grpc-v2"),
    ("inferenceservice.yaml", "name: jitnet", "name: sklearn", "model format"),
])
def test_each_mistake_fails(tmp_path, file, old, new, words):
    folder = tmp_path / "kserve"
    shutil.copytree(KSERVE, folder)
    text = (folder / file).read_text()
    assert old in text, old
    (folder / file).write_text(text.replace(old, new, 1))
    out = run_check(folder)
    assert out.returncode == 1 and words in out.stderr, out.stderr
