"""The images, built for real (deploy/base-images.sh, deploy/build-images.sh) and run one at a
time: the server's user, its warm start from the kernels compiled at build time, and the posture
a Kubernetes restricted profile imposes (read-only root filesystem, no capabilities,
no-new-privileges).

Each container runs on the test's own internal network and is reached only from a client
container on it. numba's NUMBA_DEBUG_CACHE=1 makes the server's log say where each kernel came
from: "[cache] data loaded from ..." (the build's cache) or "[cache] data saved to ..." (compiled
now).
"""

from __future__ import annotations

import re

import pytest

from . import docker_support as ds

pytestmark = pytest.mark.slow

# "SERVING within a few seconds of start": compiling the kernels instead takes 25-70 s here.
WARM_START_BOUND = 10.0


def _stages(dockerfile: str) -> list[tuple[str, str]]:
    return re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)


def test_the_build_reaches_no_registry_but_for_the_base_images():
    """Static: no `# syntax=` frontend to pull; every FROM is a base image or an earlier stage."""
    text = (ds.ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a syntax line pulls a frontend"
    seen = set()
    for image, name in _stages(text):
        assert image in seen or image in ds.BASE_IMAGES, f"FROM {image}: neither base nor stage"
        seen.add(name)
    for source in re.findall(r"--from=(\S+?)[,\s]", text):
        assert source in seen, f"--from={source} names no stage"
    assert "nginx:1.22.1" in (ds.ROOT / "docker-compose.yml").read_text()


def test_images_build_with_the_servers_user_entrypoint_and_healthcheck(engine, images):
    runtime, loadtest = engine.inspect(ds.IMAGE, ds.LOADTEST_IMAGE, kind="image")
    for image, tag in ((runtime, ds.IMAGE), (loadtest, ds.LOADTEST_IMAGE)):
        ds.figure(f"image {tag}: {image['Size'] / 1e6:.0f} MB")
    for base in ds.BASE_IMAGES:
        info = engine.inspect(base, kind="image")[0]
        stand_in = (info["Config"].get("Labels") or {}).get("org.jitnet.stand-in")
        ds.figure(f"base {base}: {info['Size'] / 1e6:.0f} MB"
                  + (f" (stand-in, {stand_in})" if stand_in else ""))
    config = runtime["Config"]
    assert config["User"] == f"{ds.UID}:{ds.UID}"
    assert config["Entrypoint"] == ["jitnet-entrypoint"]
    assert config["Cmd"] == ["jitnet", "serve"]
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "jitnet", "health"]
    assert config["StopSignal"] == "SIGTERM"
    assert "NUMBA_CACHE_DIR=/var/cache/jitnet/numba" in config["Env"]
    assert loadtest["Config"]["Entrypoint"][:1] == ["locust"]
    assert loadtest["Config"]["User"] == f"{ds.UID}:{ds.UID}"


def test_pip_settings_given_as_secrets_left_no_trace_in_the_images(engine, images):
    """The host's pip.conf and CA bundle were build secrets: not in any image."""
    check = ("for f in /etc/pip.conf /root/.config/pip/pip.conf; do "
             "[ ! -e \"$f\" ] || { echo \"found $f\"; exit 1; }; done; "
             "sha256sum /etc/ssl/certs/ca-certificates.crt | cut -d' ' -f1")
    base = engine.run("run", "--rm", "--label", f"{ds.LABEL}={ds.TOKEN}", "--network", "none",
                      "--entrypoint", "sh", ds.BASE_IMAGES[0], "-c", check).stdout.strip()
    for image in (ds.IMAGE, ds.LOADTEST_IMAGE):
        got = engine.run("run", "--rm", "--label", f"{ds.LABEL}={ds.TOKEN}", "--network", "none",
                         "--user", "0", "--entrypoint", "sh", image, "-c", check).stdout.strip()
        assert got == base, f"{image}: its CA bundle is not the base image's"


def test_kernels_were_compiled_at_build_time(engine, images):
    listing = engine.run("run", "--rm", "--label", f"{ds.LABEL}={ds.TOKEN}", "--network", "none",
                         "--entrypoint", "sh", ds.IMAGE, "-c",
                         "find /var/cache/jitnet/numba -name '*.nbi' | wc -l").stdout
    assert int(listing) >= 5, "no numba index files in the image's cache"


def _start(engine, network: str, name: str, *flags: str) -> str:
    engine.run("run", "-d", "--name", name, "--label", f"{ds.LABEL}={ds.TOKEN}",
               "--network", network, "-e", "NUMBA_DEBUG_CACHE=1", *flags, ds.IMAGE)
    return name


def _proc_status(engine, container: str) -> dict:
    text = engine.run("exec", container, "cat", "/proc/1/status").stdout
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: v.strip() for k, v in fields}


def _assert_warm_from(engine, container: str, cache_dir: str) -> None:
    log = engine.logs(container)
    loaded = re.findall(r"\[cache\] data loaded from '([^']+)'", log)
    assert loaded, f"no kernel came from the numba cache:\n{log[-3000:]}"
    assert all(path.startswith(cache_dir + "/") for path in loaded), loaded
    assert "[cache] data saved" not in log, "a kernel was compiled at start"
    assert "kernels ready in" in log


def test_server_runs_as_10001_and_serves_within_seconds_from_the_build_cache(engine, images,
                                                                              network):
    name = _start(engine, network, f"{ds.PREFIX}-warm")
    seconds = ds.seconds_to_serving(engine, name)
    ds.figure(f"start to SERVING, default posture: {seconds:.2f} s")
    assert seconds < WARM_START_BOUND
    _assert_warm_from(engine, name, "/var/cache/jitnet/numba")
    status = _proc_status(engine, name)
    assert status["Uid"].split() == [ds.UID] * 4 and status["Gid"].split() == [ds.UID] * 4
    assert "jitnet serve" in engine.run("exec", name, "cat", "/proc/1/cmdline").stdout.replace(
        "\0", " ")
    assert engine.run("exec", name, "jitnet", "health", "--target", "127.0.0.1:50051"
                      ).stdout.strip() == "SERVING"
    # A client container on the same network, by the server's container name.
    reply = engine.client(network, "jitnet", "--target", f"{name}:50051", "health")
    assert reply.stdout.strip() == "SERVING"


def test_read_only_root_without_capabilities_still_serves_warm(engine, images, network):
    """docker run --read-only --cap-drop ALL --security-opt no-new-privileges, writable tmpfs on
    /tmp (the entrypoint's copy of the numba cache) and /data (models) only."""
    name = _start(engine, network, f"{ds.PREFIX}-ro", "--read-only", "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges",
                  "--tmpfs", f"/tmp:uid={ds.UID},gid={ds.UID}",
                  "--tmpfs", f"/data:uid={ds.UID},gid={ds.UID}")
    seconds = ds.seconds_to_serving(engine, name)
    ds.figure(f"start to SERVING, read-only root, no capabilities: {seconds:.2f} s")
    assert seconds < WARM_START_BOUND
    log = engine.logs(name)
    assert "using a copy of the build-time numba cache in /tmp/jitnet-numba-cache" in log
    _assert_warm_from(engine, name, "/tmp/jitnet-numba-cache")

    host_config = engine.inspect(name)[0]["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    status = _proc_status(engine, name)
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Uid"].split()[0] == ds.UID
    denied = engine.run("exec", name, "sh", "-c", "touch /jitnet-write-test", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr

    # It serves: the healthcheck's command, and a model created, trained and used by a client.
    assert engine.run("exec", name, "jitnet", "health", "--target", "127.0.0.1:50051"
                      ).stdout.strip() == "SERVING"
    target = {"JITNET_TARGET": f"{name}:50051"}
    engine.client(network, "jitnet", "create", "--id", "ro", "--layers", "2,4,1", "--init",
                  "uniform", "--seed", "0", env=target)
    engine.client(network, "jitnet", "train", "ro", "--data", "xor", "--epochs", "3000",
                  "--learning-rate", "0.5", env=target)
    snapshot = ds.probe_result(engine.client(network, "snapshot", f"{name}:50051", "ro",
                                             probe=True))
    # Training committed new versions: /data (a tmpfs here) took the writes.
    assert snapshot["version"] == snapshot["stored_version"] > 1
