"""`jitnet serve --web-port`, alone and as the parent of workers, and `jitnet demo --web`: the
page is served where the settings say, and its API reaches the server's gRPC port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from jitnet.client import Client, cli
from jitnet.service.config import Config
from tests.support.servers import ROOT, START_TIMEOUT
from tests.support.waiting import wait_for

from .conftest import PageApi

PAGE_LINE = re.compile(r"the playground page: (http://\S+/)")


def test_the_page_is_off_unless_a_port_is_given_and_local_by_default():
    assert Config.from_env({}).web_port is None
    config = Config.from_env({"JITNET_WEB_PORT": "8088"})
    assert (config.web_port, config.web_host) == (8088, "127.0.0.1")
    assert Config.from_env({"JITNET_WEB_HOST": "0.0.0.0"}).web_host == "0.0.0.0"
    assert Config(web_port=0).to_env()["JITNET_WEB_PORT"] == "0"


def page_url(server) -> str:
    return wait_for(lambda: next((m.group(1) for line in server.lines
                                  if (m := PAGE_LINE.search(line))), None),
                    START_TIMEOUT, 0.05, "the page's address in the log")


@pytest.mark.slow
def test_serve_with_a_web_port(spawn):
    server = spawn("--web-port", "0")
    url = page_url(server)
    assert url.startswith("http://127.0.0.1:")
    page = PageApi(url)
    assert page.get("/").status == 200
    assert page.get("/api/info").body["grpc_target"] == f"127.0.0.1:{server.port}"
    made = page.create()
    with Client(server.address) as grpc:
        assert grpc.get_model(made["id"]).version == 1


@pytest.mark.slow
def test_the_parent_of_workers_serves_the_page_on_the_shared_port(spawn):
    server = spawn("--workers", "2", "--web-port", "0")
    page = PageApi(page_url(server))
    wait_for(lambda: page.get("/api/info").body["health"] == "SERVING", START_TIMEOUT, 0.1,
             "the workers SERVING through the page")
    made = page.create()
    lines = page.train_lines(made["id"], epochs=5, learning_rate=0.5, report_every=1)
    assert lines[-1]["version"] == 6
    with Client(server.address) as grpc:  # any worker: they share the store
        assert grpc.get_model(made["id"], min_version=6).epochs_trained == 5
    assert len([line for line in server.lines if PAGE_LINE.search(line)]) == 1  # the parent's


def test_demo_web_serves_until_its_bound(warmed, capsys):
    assert cli.main(["demo", "--web", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"The playground: open http://127\.0\.0\.1:\d+/ in a browser "
                     r"\(for 0\.3 s\)\.", out)
    assert out.rstrip().endswith("Stopping the server.")


@pytest.mark.slow
def test_demo_web_until_ctrl_c(tmp_path):
    demo = subprocess.Popen([sys.executable, "-m", "jitnet.client.cli", "demo", "--web",
                             "--data-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        for line in demo.stdout:  # ends if the demo exits
            lines.append(line)
            found = re.search(r"open (http://\S+/) in a browser \(Ctrl-C stops it\)", line)
            if found:
                break
        assert found, "".join(lines)
        with urllib.request.urlopen(found.group(1), timeout=10) as response:
            assert response.status == 200
        assert PageApi(found.group(1)).get("/api/info").body["health"] == "SERVING"
        demo.send_signal(signal.SIGINT)  # by pid: Ctrl-C
        out, _ = demo.communicate(timeout=30)
        assert demo.returncode == 0, "".join(lines) + out
        assert "Stopping the server." in out
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
