"""Store benchmark: the PostgreSQL store against the file store, side by side in one run.

    python benchmarks/stores.py             # about 3 minutes; rewrites the `## Stores` section of
                                            # docs/benchmarks.md (nothing else in that file)
    python benchmarks/stores.py --quick     # under a minute: shorter and fewer rounds
    python benchmarks/stores.py --no-write  # print the section only; --json FILE keeps figures
    python benchmarks/stores.py --hosts     # commit-to-visible across network-namespace hosts
                                            # (root): db, writer on a, observer on b

It starts a throwaway PostgreSQL cluster (Debian's postgresql; fsync and synchronous commit on,
so a commit is as durable as the file store's fsynced rename) in a temporary directory next to
the file store's, and removes both at the end. Run it on a quiet machine: every figure is
compared only with a baseline measured in the same run.

Cases:
  Predict 1 sample    QPS of a one-sample raw Predict (64-64-10, as the jitnet client sends it),
                      closed loop with 32 calls in flight, server on core 0, client on core 1:
                      jitnet on the PostgreSQL store against jitnet on the file store (Predict
                      never touches the database on its hot path). Rounds alternate (ABCD DCBA),
                      medians reported.
  min_version         the same request carrying min_version = the model's current version (what
                      the client sends to read its own writes) against min_version 0, on each
                      store: the check costs one integer comparison when the replica is current.
  Commit              one Train progress's commit (Lease.commit: the parameters and momentum of
                      a 64-64-10 model, 4,810 parameters, and of a 256-256-10 one, 68,362): time
                      per commit, PostgreSQL against file.
  Commit to visible   a writer process commits every 20 ms; an observer process, another server,
                      polls the version its store holds: delay from the writer's commit returning
                      to the observer holding that version (or a newer one), p50 and p99 over
                      the commits; PostgreSQL (notices) against file (re-check every 0.5 s, the
                      default --refresh-seconds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Stores"
SERVER_CORE, CLIENT_CORE = 0, 1
MODEL = "bench"
SIZES = {"64-64-10": (64, 64, 10), "256-256-10": (256, 256, 10)}

# The throwaway cluster and the test hosts are the tests' own (tests/support/postgres.py,
# tests/hosts/topology.py): the benchmark runs from a checkout, whose root is importable.
sys.path.insert(0, str(ROOT))

import common  # noqa: E402  (a sibling: benchmarks/ is on sys.path when run as a script)
import serve  # noqa: E402  (its load client)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# ---------------------------------------------------------------------------------------------
# Predict QPS: servers on core 0, a closed-loop client on core 1


class Server:
    def __init__(self, store: str, workdir: pathlib.Path, name: str):
        self.port = _free_port()
        self.log = workdir / f"{name}.log"
        argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
                str(self.port), "--threads", "8"]
        env = {**os.environ, "JITNET_STORE": store}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=common.pinned_to(SERVER_CORE))
        self.target = f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 120) -> None:
        from jitnet.client import Client

        deadline = time.monotonic() + timeout
        with Client(self.target, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
                try:
                    if client.health() == "SERVING":
                        return
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server not SERVING after {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def measure_predict(stores: dict[str, str], workdir: pathlib.Path, args) -> dict:
    """QPS of a one-sample Predict, per store, with min_version 0 and current."""
    import numpy as np

    from jitnet.client import Client
    from jitnet.v1 import jitnet_pb2 as pb

    servers = {name: Server(location, workdir, f"server-{name}")
               for name, location in stores.items()}
    try:
        for server in servers.values():
            server.wait_serving()
        x = np.random.default_rng(0).random((1, 64))
        requests = {}
        for name, server in servers.items():
            with Client(server.target) as client:
                client.create_model([64, 64, 10], output="softmax", loss="cross-entropy",
                                    seed=1, model_id=f"{MODEL}-{name}")
                version = [p.version for p in client.train(
                    f"{MODEL}-{name}", x, np.eye(10)[:1], epochs=3, learning_rate=0.1,
                    report_every=1)][-1]
            # both servers measured on the model's specialised kernels (the Train asked)
            common.wait_specialised(server.log, ("64-64-10",), lambda: None,
                                    lambda server=server: server.proc.poll() is None)
            for asked in ("0", "current"):
                message = pb.PredictRequest(
                    model_id=f"{MODEL}-{name}",
                    inputs=pb.Tensor(shape=[1, 64], raw=x.astype("<f8").tobytes()),
                    min_version=0 if asked == "0" else version)
                path = workdir / f"request-{name}-{asked}.bin"
                path.write_bytes(message.SerializeToString())
                requests[(name, asked)] = path
        order = list(requests)
        runs: dict[tuple, list[dict]] = {key: [] for key in order}
        for round_ in range(args.rounds):
            for key in (order if round_ % 2 == 0 else order[::-1]):  # ABCD DCBA
                server = servers[key[0]]  # serve.py's load client, on the client core
                runs[key].append(serve.run_client(dict(os.environ), server.target,
                                                  requests[key], server.proc.pid, 32,
                                                  args.seconds, args.warmup))
        return {f"{name}/{asked}": {
            "qps": statistics.median(r["qps"] for r in results),
            "p50": statistics.median(r["p50"] for r in results),
            "p99": statistics.median(r["p99"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "rounds": [round(r["qps"]) for r in results]}
            for (name, asked), results in runs.items()}
    finally:
        for server in servers.values():
            server.stop()


# ---------------------------------------------------------------------------------------------
# Commit cost, in this process


def measure_commit(stores: dict[str, str], args) -> dict:
    import numpy as np

    from jitnet.service.engine.model import Architecture, Init, initial_parameters
    from jitnet.service.engine.optimizers import OptimizerState
    from jitnet.service.store import open_store

    out = {}
    opened = {name: open_store(location) for name, location in stores.items()}
    try:
        for store in opened.values():
            store.open()
        for label, sizes in SIZES.items():
            arch = Architecture(sizes)
            params = initial_parameters(arch, Init.XAVIER, 0)
            times: dict[str, list[float]] = {name: [] for name in opened}
            for store in opened.values():
                store.create(f"commit-{label}", arch, params.copy())
            for block in range(args.commit_blocks):
                names = list(opened) if block % 2 == 0 else list(opened)[::-1]
                for name in names:
                    with opened[name].lease(f"commit-{label}") as lease:
                        for k in range(args.commits_per_block):
                            fresh, state = params + k, OptimizerState.sgd(np.zeros_like(params))
                            began = time.perf_counter()
                            lease.commit(fresh, state, last_loss=1.0, iterations=k)
                            times[name].append(time.perf_counter() - began)
            out[label] = {name: {"median_ms": 1e3 * statistics.median(t),
                                 "p90_ms": 1e3 * _percentile(t, 90), "commits": len(t)}
                          for name, t in times.items()}
            out[label]["parameters"] = arch.n_params
    finally:
        for store in opened.values():
            store.close()
    return out


# ---------------------------------------------------------------------------------------------
# Commit to visible: a writer process and an observer process (optionally on two hosts)


def writer_main(args) -> int:
    """Commits every `interval` s after a line on stdin; prints {version: commit return time}."""

    from jitnet.service.engine.optimizers import NO_STATE
    from jitnet.service.store import open_store

    store = open_store(args.store)
    store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    returned = {}
    with store.lease(MODEL) as lease:
        params = lease.record.params
        for k in range(args.commits):
            record = lease.commit(params + k + 1, NO_STATE, last_loss=1.0)
            returned[record.version] = time.monotonic()
            time.sleep(args.interval)
    store.close()
    json.dump(returned, sys.stdout)
    return 0


def observer_main(args) -> int:
    """Polls the version its store holds until `until`; prints {version: first time held}."""
    from jitnet.service.store import open_store

    store = open_store(args.store, refresh_seconds=args.refresh)
    store.open()
    held = store.get(MODEL).version
    print("ready", flush=True)
    seen = {}
    deadline = time.monotonic() + args.timeout
    while held < args.until and time.monotonic() < deadline:
        version = store.get(MODEL).version
        if version > held:
            now = time.monotonic()
            for v in range(held + 1, version + 1):
                seen[v] = now
            held = version
        time.sleep(0.0002)
    store.close()
    json.dump(seen, sys.stdout)
    return 0


def measure_visibility(stores: dict[str, str], args, hosts=None) -> dict:
    from jitnet.service.engine.model import Architecture, Init, initial_parameters
    from jitnet.service.store import open_store

    arch = Architecture((64, 64, 10))
    out = {}
    for name, location in stores.items():
        setup = open_store(location)
        setup.open()
        setup.create(MODEL, arch, initial_parameters(arch, Init.XAVIER, 0))
        start_version = setup.get(MODEL).version
        setup.close()
        prefix = {"writer": [], "observer": []}
        if hosts is not None:
            prefix = {"writer": hosts.exec_prefix("a"), "observer": hosts.exec_prefix("b")}
        common = ["--store", location]
        observer = subprocess.Popen(
            [*prefix["observer"], sys.executable, __file__, "_observer", *common,
             "--until", str(start_version + args.visible_commits), "--refresh", "0.5",
             "--timeout", str(args.visible_commits * args.interval + 60)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        writer = subprocess.Popen(
            [*prefix["writer"], sys.executable, __file__, "_writer", *common, "--commits",
             str(args.visible_commits), "--interval", str(args.interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for proc in (observer, writer):
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a helper failed:\n{proc.stderr.read()[-3000:]}")
            writer.stdin.write("go\n")
            writer.stdin.flush()
            returned, _ = writer.communicate(timeout=args.visible_commits * args.interval + 120)
            seen, _ = observer.communicate(timeout=120)
        finally:
            for proc in (observer, writer):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        returned = {int(k): v for k, v in json.loads(returned).items()}
        seen = {int(k): v for k, v in json.loads(seen).items()}
        delays = [1e3 * (seen[v] - t) for v, t in returned.items() if v in seen]
        out[name] = {"p50_ms": _percentile(delays, 50), "p99_ms": _percentile(delays, 99),
                     "max_ms": max(delays), "commits": len(delays),
                     "missed": len(returned) - len(delays)}
    return out


# ---------------------------------------------------------------------------------------------
# The run and its report


def run(args) -> dict:
    from tests.support.postgres import Cluster, binaries

    if binaries() is None:
        raise SystemExit("PostgreSQL is not installed: apt-get install -y "
                         "--no-install-recommends postgresql")

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="jitnet-stores-"))
    cluster = None
    network = None
    results = {"when": _dt.datetime.now().isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "python": platform.python_version(), "quick": args.quick, "hosts": args.hosts}
    try:
        if args.hosts:
            from tests.hosts.topology import Network, usable

            reason = usable()
            if reason:
                raise SystemExit(f"--hosts: {reason}")
            network = Network.create()
            cluster = Cluster(network.address("db"), 5432, netns=network.namespaces["db"],
                              durable=True)
        else:
            cluster = Cluster(durable=True)
        cluster.start()
        from jitnet.service.server import warmup

        warmup.warm_up()

        def fresh_stores(tag: str) -> dict[str, str]:
            name = f"bench_{tag}"
            cluster.sql(f'CREATE DATABASE "{name}"')
            directory = workdir / f"files-{tag}"
            directory.mkdir()
            return {"postgres": cluster.dsn(name), "file": str(directory)}

        print("== Predict 1 sample: PostgreSQL and file stores, min_version 0 and current",
              file=sys.stderr)
        results["predict"] = measure_predict(fresh_stores("predict"), workdir, args)
        print("== Commit", file=sys.stderr)
        results["commit"] = measure_commit(fresh_stores("commit"), args)
        print("== Commit to visible", file=sys.stderr)
        results["visible"] = measure_visibility(fresh_stores("visible"), args,
                                                network if args.hosts else None)
        results["visible_where"] = ("writer on host a, observer on host b, database on host db "
                                    "(network namespaces)" if args.hosts else
                                    "writer and observer processes on this machine")
    finally:
        if cluster is not None:
            cluster.remove()
        if network is not None:
            network.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def render(results: dict) -> str:
    predict, commit, visible = results["predict"], results["commit"], results["visible"]
    pg, file = predict["postgres/0"], predict["file/0"]
    lines = [
        SECTION, "",
        f"`python benchmarks/stores.py{' --quick' if results['quick'] else ''}"
        f"{' --hosts' if results.get('hosts') else ''}` on "
        f"{results['when']} ({results['machine']}, Python {results['python']}). Ratios compare "
        "figures of this one run.", "",
        "| case | PostgreSQL store | file store | ratio |",
        "| --- | --- | --- | --- |",
        f"| Predict 1 sample, QPS (p50 / p99 ms) | {pg['qps']:,.0f} ({pg['p50']:.2f} / "
        f"{pg['p99']:.2f}) | {file['qps']:,.0f} ({file['p50']:.2f} / {file['p99']:.2f}) | "
        f"{pg['qps'] / file['qps']:.2f}x |",
    ]
    for label in SIZES:
        c = commit[label]
        lines.append(f"| Commit of one Train progress, {label} ({c['parameters']:,} parameters), "
                     f"median (p90) ms | {c['postgres']['median_ms']:.2f} "
                     f"({c['postgres']['p90_ms']:.2f}) | {c['file']['median_ms']:.2f} "
                     f"({c['file']['p90_ms']:.2f}) | "
                     f"{c['postgres']['median_ms'] / c['file']['median_ms']:.2f}x |")
    v_pg, v_file = visible["postgres"], visible["file"]
    lines.append(f"| Commit to visible on another server, p50 / p99 ms ({v_pg['commits']} "
                 f"commits) | {v_pg['p50_ms']:.1f} / {v_pg['p99_ms']:.1f} | "
                 f"{v_file['p50_ms']:.1f} / {v_file['p99_ms']:.1f} | "
                 f"{v_pg['p50_ms'] / v_file['p50_ms']:.3f}x (p50) |")
    lines += ["", "Read your writes on the hot path (min_version = the current version against "
              "0, the same server):", "",
              "| store | QPS, min_version 0 | QPS, min_version current | ratio |",
              "| --- | --- | --- | --- |"]
    for name in ("postgres", "file"):
        zero, current = predict[f"{name}/0"], predict[f"{name}/current"]
        lines.append(f"| {name} | {zero['qps']:,.0f} | {current['qps']:,.0f} | "
                     f"{current['qps'] / zero['qps']:.2f}x |")
    errors = sum(p["errors"] for p in predict.values())
    lines += ["", "Predict rounds (QPS, in order): " + "; ".join(
        f"{key} {p['rounds']}" for key, p in predict.items()) + f". Failed calls: {errors}.",
        f"Commit to visible: {results['visible_where']}; a commit every 20 ms; the file "
        "store's observer re-checks every 0.5 s (the default --refresh-seconds), the "
        "PostgreSQL store's is told by LISTEN/NOTIFY.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_writer", "_observer"):
        helper = argparse.ArgumentParser()
        helper.add_argument("--store")
        helper.add_argument("--commits", type=int)
        helper.add_argument("--interval", type=float)
        helper.add_argument("--until", type=int)
        helper.add_argument("--refresh", type=float)
        helper.add_argument("--timeout", type=float)
        args = helper.parse_args(argv[1:])
        return {"_writer": writer_main, "_observer": observer_main}[argv[0]](args)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter, fewer rounds")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    parser.add_argument("--hosts", action="store_true",
                        help="commit-to-visible across network-namespace hosts (needs root)")
    args = parser.parse_args(argv)
    args.rounds = 2 if args.quick else 4
    args.seconds = 1.5 if args.quick else 4.0
    args.warmup = 0.5 if args.quick else 1.0
    args.commit_blocks = 2 if args.quick else 6
    args.commits_per_block = 20 if args.quick else 50
    args.visible_commits = 200 if args.quick else 500
    args.interval = 0.02
    common.pin_self(CLIENT_CORE)  # the driver keeps off the servers' core
    results = run(args)
    text = render(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.no_write:
        common.write_section(text, SECTION, DOCS)
        print(f"wrote the {SECTION} section of {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
