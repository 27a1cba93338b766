"""A real Prometheus (Debian's `prometheus` package; scripts/test installs it) on 127.0.0.1,
with its own config and data directory, queried through its HTTP API."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Scrapes `targets` (host:port) as job "jitnet" every second, evaluates the shipped alert
    rules every second. Stop it with `.stop()` (by its pid)."""

    def __init__(self, workdir: pathlib.Path, targets: list[str]):
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (apt-get install prometheus; scripts/test does)"
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ALERTS, workdir / "alerts.yml")
        (workdir / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "jitnet",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             f"--web.console.templates={workdir}", f"--web.console.libraries={workdir}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.logfile = workdir / "prometheus.log"
        try:
            self._wait_ready(60)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}:\n"
                                     + self.logfile.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus not ready:\n" + self.logfile.read_text()[-3000:])

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; the JSON answer (status "success" or "error")."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as error:  # 400/422: a bad query, answered in JSON
            return json.load(error)

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector; fails on an error answer."""
        answer = self.api("query", query=promql)
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
