"""Fixtures of the container tests: the Docker engine, the images, a network of the test's own.

JITNET_SKIP_CONTAINER_TESTS=1 skips them all (CI never sets it), and the end of the run says so
in capitals. Otherwise they need root, a Docker engine or dockerd to start (apt-get install
docker.io), docker-compose, and debootstrap where no registry answers; scripts/test installs
these. A dockerd started here is stopped again (by its pid) when the package's tests end.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from . import docker_support as ds


def pytest_terminal_summary(terminalreporter):
    if ds.skip_requested():
        terminalreporter.section("CONTAINER TESTS SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.line(
            f"tests/container did NOT run: {ds.SKIP_VARIABLE} is set. The Dockerfile, the "
            "compose stack and the images were not built or run.", red=True, bold=True)
    elif ds.FIGURES:
        terminalreporter.section("jitnet containers: figures measured in this run")
        for line in ds.FIGURES:
            terminalreporter.line(line)


@pytest.fixture(scope="package")
def engine(tmp_path_factory):
    if ds.skip_requested():
        pytest.skip(f"{ds.SKIP_VARIABLE} is set: container tests skipped (CI never sets it)")
    running = ds.start_engine(tmp_path_factory.mktemp("docker"))
    ds.figure(f"docker client {running.docker}, compose {' '.join(running.compose)}, engine "
              + ("started by this run" if running.dockerd else "already running"))
    try:
        yield running
    finally:
        running.remove_labelled(f"label={ds.LABEL}={ds.TOKEN}")
        ds.stop_engine(running)


def _run_script(engine, script: str, log_path) -> float:
    began = time.monotonic()
    with open(log_path, "w") as log:
        result = subprocess.run(["bash", str(ds.ROOT / "deploy" / script)], cwd=ds.ROOT,
                                env={**engine.env, "DOCKER": engine.docker},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                timeout=1800)
    took = time.monotonic() - began
    text = log_path.read_text(errors="replace")
    assert result.returncode == 0, f"deploy/{script} exited {result.returncode}:\n" + \
        "\n".join(text.splitlines()[-60:])
    return took


@pytest.fixture(scope="package")
def images(engine, tmp_path_factory):
    """The stand-in base images where no registry answers, then both targets, built as
    README's Deployment section says. Returns the build log's text."""
    logs = tmp_path_factory.mktemp("build")
    took = _run_script(engine, "base-images.sh", logs / "base-images.log")
    for line in (logs / "base-images.log").read_text().splitlines():
        if line.startswith("base-images:"):
            ds.figure(line)
    ds.figure(f"deploy/base-images.sh: {took:.0f} s")
    took = _run_script(engine, "build-images.sh", logs / "build-images.log")
    text = (logs / "build-images.log").read_text()
    for line in text.splitlines():
        if line.startswith("build-images:") and " built in " in line:
            ds.figure(line)
    ds.figure(f"deploy/build-images.sh (both targets): {took:.0f} s")
    return text


@pytest.fixture(scope="package")
def network(engine):
    """An internal bridge network of the test's own, for single containers and their clients."""
    name = f"{ds.PREFIX}-net"
    engine.run("network", "create", "--internal", "--label", f"{ds.LABEL}={ds.TOKEN}", name)
    try:
        yield name
    finally:
        containers = engine.ids("container", f"network={name}")
        if containers:
            engine.run("rm", "-f", "-v", *containers, check=False)
        engine.run("network", "rm", name, check=False)
