"""Test hosts as network namespaces: `db` (PostgreSQL 15), `a` and `b` (jitnet replicas on the
PostgreSQL store) and `lb` (Debian's nginx with the shipped config, deploy/nginx.conf), each
with its own address on one bridge, plus the test process itself on that bridge.

    net = Network.create()             # namespaces, veth pairs, a bridge, a FORWARD rule
    net.cut("a"); net.restore("a")     # the host's link down (connects time out) and up again
    net.remove()                       # everything made here, also after a failure

Names carry this process's pid (namespaces `jitnet-<pid>-db`, links `jv<pid><host>`), so
parallel runs never meet, and a run that was killed is cleaned up by the next one
(`remove_leftovers`). Docker sets the FORWARD policy to DROP and makes bridged traffic go
through iptables, so the bridge gets an ACCEPT rule for its own traffic, removed with it.
Traffic stays between these namespaces and the test process; nothing is routed out.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..support.topology import render as render_nginx
from ..support.waiting import wait_for

HOSTS = ("db", "a", "b", "lb")
PORT = 50051
START_TIMEOUT = 90.0

_NAME = re.compile(r"^jitnet-(\d+)-(db|a|b|lb)$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _iptables(*args: str, check: bool = True) -> bool:
    done = subprocess.run(["iptables", "-w", "10", *args], capture_output=True, text=True,
                          timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.returncode == 0


def usable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "nginx", "setpriv"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed"
    return None


def remove_leftovers() -> None:
    """Namespaces, links and rules of runs whose process is gone (killed before cleaning up)."""
    for line in _ip("netns", "list").stdout.splitlines():
        match = _NAME.match(line.split()[0]) if line.strip() else None
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            _ip("netns", "del", line.split()[0], check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        match = re.search(r"\d+: (jb(\d+))[:@]", line)
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            bridge = match.group(1)
            while _iptables("-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
                            check=False):
                pass
            _ip("link", "del", bridge, check=False)


@dataclasses.dataclass
class Network:
    tag: str
    subnet: str  # "10.231.N" : hosts are .1 db, .2 a, .3 b, .4 lb; the test process .254
    bridge: str
    namespaces: dict[str, str]  # host -> namespace name
    links: dict[str, str]  # host -> its veth end on the bridge (in the test's namespace)
    rule: bool = False

    @classmethod
    def create(cls) -> Network:
        remove_leftovers()
        tag = str(os.getpid())
        net = cls(tag, _free_subnet(), f"jb{tag}", {}, {})
        try:
            net._build()
        except BaseException:
            net.remove()
            raise
        return net

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS.index(host) + 1}"

    @property
    def own_address(self) -> str:
        return f"{self.subnet}.254"

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
        _ip("addr", "add", f"{self.own_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        _iptables("-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        self.rule = True
        for host in HOSTS:
            namespace = f"jitnet-{self.tag}-{host}"
            _ip("netns", "add", namespace)
            self.namespaces[host] = namespace
            outside, inside = f"jv{self.tag}{host[0]}", f"jp{self.tag}{host[0]}"
            if host == "lb":
                outside, inside = f"jv{self.tag}l", f"jp{self.tag}l"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns",
                namespace)
            self.links[host] = outside
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            for args in (("link", "set", inside, "name", "eth0"),
                         ("addr", "add", f"{self.address(host)}/24", "dev", "eth0"),
                         ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
                _ip("-n", namespace, *args)

    def cut(self, host: str) -> None:
        """The host's link down: its packets go nowhere, connects to it time out."""
        _ip("link", "set", self.links[host], "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self.links[host], "up")

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[host]]

    def packets_to(self, host: str) -> int:
        """Packets the bridge sent down the host's link so far."""
        path = pathlib.Path(f"/sys/class/net/{self.links[host]}/statistics/tx_packets")
        return int(path.read_text())

    def remove(self) -> None:
        for namespace in self.namespaces.values():
            _ip("netns", "del", namespace, check=False)  # takes its veth pair with it
        self.namespaces.clear()
        for link in self.links.values():
            _ip("link", "del", link, check=False)
        self.links.clear()
        _ip("link", "del", self.bridge, check=False)
        if self.rule:
            _iptables("-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT",
                      check=False)
            self.rule = False

    def leftovers(self) -> list[str]:
        """What of this network still exists (for the test that checks the cleanup)."""
        names = _ip("netns", "list").stdout.split()
        left = [n for n in names if n.startswith(f"jitnet-{self.tag}-")]
        links = _ip("-o", "link", "show").stdout
        left += [n for n in re.findall(r"\d+: ([^:@]+)", links)
                 if n == self.bridge or n.startswith(f"jv{self.tag}")]
        rules = subprocess.run(["iptables", "-w", "10", "-S", "FORWARD"], capture_output=True,
                               text=True).stdout
        left += [r for r in rules.splitlines() if self.bridge in r]
        return left


def _free_subnet() -> str:
    taken = _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    for _ in range(100):
        subnet = f"10.231.{random.randint(1, 250)}"
        if f"{subnet}." not in taken:
            return subnet
    raise RuntimeError("no free 10.231.N.0/24 subnet for the test hosts")


# -- processes on the hosts ----------------------------------------------------------------------


class Process:
    """A process started on a host (`ip netns exec` execs it: the pid is its own), its output
    in a file; stopped or killed by that pid."""

    def __init__(self, argv: list[str], log: pathlib.Path, env: dict | None = None):
        self.argv = argv
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def stop(self, signum=signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def health(address: str, timeout: float = 2.0) -> int | None:
    try:
        with grpc.insecure_channel(address) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout).status
    except grpc.RpcError:
        return None


SERVING = health_pb2.HealthCheckResponse.SERVING


class Replica:
    """`python -m jitnet.service.server` on host a or b, on the PostgreSQL store."""

    def __init__(self, net: Network, host: str, dsn: str, logs: pathlib.Path, *flags: str):
        self.net, self.host, self.dsn, self.logs, self.flags = net, host, dsn, logs, flags
        self.address = f"{net.address(host)}:{PORT}"
        self.process: Process | None = None
        self.starts = 0

    def start(self) -> Replica:
        self.starts += 1
        argv = [*self.net.exec_prefix(self.host), sys.executable, "-m", "jitnet.service.server",
                "--host", self.net.address(self.host), "--port", str(PORT),
                "--grace-seconds", "3", *self.flags]
        # The DSN (with its password) goes by the environment, not the command line.
        self.process = Process(argv, self.logs / f"replica-{self.host}-{self.starts}.log",
                               env={"JITNET_STORE": self.dsn})
        return self

    def wait_serving(self) -> None:
        def serving():
            assert self.process.alive(), f"replica {self.host} exited:\n{self.process.log}"
            return health(self.address) == SERVING
        wait_for(serving, START_TIMEOUT, what=f"replica {self.host} SERVING", interval=0.1)

    @property
    def log(self) -> str:
        return self.process.log if self.process else ""


class Balancer:
    """Debian's nginx on host lb with deploy/nginx.conf rendered for the replicas."""

    def __init__(self, net: Network, upstreams: list[str], prefix: pathlib.Path):
        prefix.mkdir(parents=True, exist_ok=True)
        self.address = f"{net.address('lb')}:{PORT}"
        conf = prefix / "nginx.conf"
        rendered = render_nginx(upstreams, self.address)  # the script, as compose users run it
        if rendered.returncode != 0:
            raise RuntimeError(f"deploy/render_nginx.py refused the hosts' addresses: "
                               f"{rendered.stderr.strip()}")
        conf.write_text(rendered.stdout)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = Process([*net.exec_prefix("lb"), binary, "-e", "stderr", "-c", str(conf),
                                "-p", f"{prefix}/", "-g", "daemon off;"], prefix / "nginx.log")
        wait_for(lambda: health(self.address) == SERVING, 30, what="SERVING through nginx",
                 interval=0.1)

    def stop(self) -> None:
        self.process.stop(signal.SIGQUIT)


@dataclasses.dataclass
class Hosts:
    """The whole topology, up and SERVING."""

    net: Network
    cluster: object  # tests.support.postgres.Cluster, in host db
    dsn: str  # as the replicas reach the database: on host db's address
    replicas: dict[str, Replica]
    balancer: Balancer

    @property
    def lb(self) -> str:
        return self.balancer.address

    def sql(self, statement: str, params=()):
        return self.cluster.sql(statement, params, dbname="jitnet")

    def stored_version(self, model_id: str) -> int | None:
        rows = self.sql("SELECT version FROM jitnet_models WHERE id = %s", (model_id,))
        return rows[0][0] if rows else None

    def stop(self) -> None:
        for replica in self.replicas.values():
            if replica.process is not None:
                replica.process.stop()
        self.balancer.stop()
        self.cluster.remove()


def start_hosts(net: Network, logs: pathlib.Path, *replica_flags: str) -> Hosts:
    from ..support.postgres import Cluster

    cluster = Cluster(net.address("db"), 5432, netns=net.namespaces["db"])
    replicas: dict[str, Replica] = {}
    balancer = None
    try:
        cluster.start()
        cluster.sql("CREATE DATABASE jitnet")
        dsn = cluster.dsn("jitnet")
        for host in ("a", "b"):
            replicas[host] = Replica(net, host, dsn, logs, *replica_flags).start()
        for replica in replicas.values():
            replica.wait_serving()
        balancer = Balancer(net, [r.address for r in replicas.values()], logs / "nginx")
    except BaseException:
        for replica in replicas.values():
            if replica.process is not None:
                replica.process.kill()
        if balancer is not None:
            balancer.stop()
        cluster.remove()
        raise
    return Hosts(net, cluster, dsn, replicas, balancer)


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    """Runs target(*args) in a daemon thread; the list gets its result or its exception."""
    out: list = []

    def run():
        try:
            out.append(target(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def skip_unless_usable() -> None:
    reason = usable()
    if reason:
        pytest.skip(reason)
