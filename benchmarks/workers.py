"""Server workers: QPS and server CPU per call with 1 and with 2 workers (`--workers N`).

    python benchmarks/workers.py            # ~2 minutes; rewrites `## Workers` in
                                            # docs/benchmarks.md (nothing else in that file)
    python benchmarks/workers.py --quick    # one short round each
    python benchmarks/workers.py --no-write # print only;  --json FILE also writes the numbers

Two servers run side by side, one with `--workers 1` and one with `--workers 2`, every server
process (parent and workers) pinned to core 0; the load client, a grpc.aio closed loop in its
own process, runs on core 1 with `--in-flight` calls outstanding over `--channels` channels
(SO_REUSEPORT spreads connections, not calls, over the workers: one channel would reach one
worker). Rounds alternate the two servers (ABBA); the table has medians over rounds.

*CPU us/call* is the CPU time of every process of the server (parent and workers) over the
measured window, per completed call. On this 2-core machine the client needs a core too, so the
servers share the other one, and what two workers can show here is their cost, not their
throughput: the figure that counts is CPU per call, which must not grow with the workers (at
most 1.05x). Work per call that does not grow means throughput that grows with the cores the
workers get on a bigger host, as each worker is a whole server with its own interpreter (no GIL
shared between them) and nothing shared but the port and the model store.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import common  # a sibling: benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Workers"
SERVER_CORE, CLIENT_CORE = 0, 1
PREDICT = "/jitnet.v1.NetworkService/Predict"
MAX_CPU_RATIO = 1.05


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Server:
    """`jitnet serve --workers N` on core 0, its log in a file."""

    def __init__(self, workdir: Path, workers: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workers = workers
        self.log_path = workdir / f"workers-{workers}.log"
        argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
                str(self.port), "--data-dir", str(workdir / f"data-{workers}"),
                "--kernel-dir", str(workdir / "kernels"), "--workers", str(workers),
                "--specialise-after-predicts", "200"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=common.pinned_to(SERVER_CORE))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        return [self.proc.pid, *_children(self.proc.pid)]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                total += _cpu_seconds(pid)
            except OSError:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _request(model: str, width: int) -> bytes:
    import numpy as np

    from jitnet.v1 import jitnet_pb2 as pb
    row = np.linspace(0.0, 1.0, width)[None]
    return pb.PredictRequest(model_id=model, inputs=pb.Tensor(
        shape=row.shape, raw=row.astype("<f8").tobytes())).SerializeToString()


def prepare(server: Server, model: str, sizes) -> None:
    """Serving on every worker, the model created, and its architecture specialised in every
    worker (each worker's room counts its own Predicts) before anything is measured."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from jitnet.v1 import jitnet_pb2 as pb
    from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

    deadline = time.monotonic() + 900
    while True:
        serving = set()
        for _ in range(20):
            with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                try:
                    reply, call = health_pb2_grpc.HealthStub(ch).Check.with_call(
                        health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        serving.add(dict(call.trailing_metadata())["jitnet-worker-pid"])
                except grpc.RpcError:
                    pass
        if len(serving) == server.workers:
            break
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError("not every worker is SERVING:\n" + server.log()[-3000:])
        time.sleep(0.2)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        pb_grpc.NetworkServiceStub(channel).CreateModel(pb.CreateModelRequest(
            model_id=model, architecture=pb.Architecture(layer_sizes=list(sizes))), timeout=60)
    # Enough Predicts on enough connections that every worker asks for the specialisation.
    loaded = re.compile(rf"{'-'.join(map(str, sizes))} \S+ \S+ \S+: specialised kernels loaded")
    while len(loaded.findall(server.log())) < server.workers:
        run_client(server.port, _request(model, sizes[0]), 8, 32, 1.0, 0.0)
        if time.monotonic() > deadline:
            raise RuntimeError("not specialised in every worker:\n" + server.log()[-3000:])


def parse_load_arguments(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The load client's rounds, their length and its concurrency (--quick: two rounds of
    2 s), and the output options, added to `parser` and parsed (web.py takes them too)."""
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=32)
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 2.0
    return args


def run_client(port: int, request: bytes, channels: int, in_flight: int, seconds: float,
               warmup: float, server: Server | None = None) -> dict:
    """Runs the load client; with `server`, also that server's CPU seconds between the
    client's marks for the start and the end of its measured window."""
    argv = [sys.executable, __file__, "_client", str(port), str(channels), str(in_flight),
            str(seconds), str(warmup)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=common.pinned_to(CLIENT_CORE))
    proc.stdin.write(request)
    proc.stdin.close()
    marks = []
    for line in proc.stdout:
        if line.strip() in (b"start", b"end"):
            marks.append(server.cpu() if server is not None else 0.0)
            continue
        result = json.loads(line)
        break
    else:
        result = None
    proc.wait(60)
    if proc.returncode != 0 or result is None:
        raise RuntimeError(f"load client failed:\n{proc.stderr.read().decode()[-3000:]}")
    if server is not None:
        result["server_cpu_s"] = marks[1] - marks[0]
    return result


def client_main(argv: list[str]) -> int:
    port, channels, in_flight = int(argv[0]), int(argv[1]), int(argv[2])
    seconds, warmup = float(argv[3]), float(argv[4])
    request = sys.stdin.buffer.read()
    print(json.dumps(asyncio.run(_closed_loop(port, request, channels, in_flight, seconds,
                                              warmup))), flush=True)
    return 0


async def _closed_loop(port, request, channels, in_flight, seconds, warmup) -> dict:
    import grpc

    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                        options=[("grpc.use_local_subchannel_pool", 1)])
              for _ in range(channels)]
    calls = [ch.unary_unary(PREDICT) for ch in opened]
    for call in calls:
        await call(request, timeout=30)  # connected
    latencies, errors = [], [0]
    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds

    async def marks():  # the driver samples the server's CPU at these lines
        await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
        print("start", flush=True)
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        print("end", flush=True)

    async def worker(call):
        while True:
            began = time.perf_counter()
            if began >= t_end:
                return
            try:
                await call(request, timeout=30)
            except grpc.aio.AioRpcError:
                errors[0] += 1
                continue
            done = time.perf_counter()
            if began >= t_start and done <= t_end:
                latencies.append(done - began)

    await asyncio.gather(marks(), *(worker(calls[k % channels]) for k in range(in_flight)))
    for ch in opened:
        await ch.close()
    latencies.sort()
    n = len(latencies)
    return {"calls": n, "qps": n / seconds, "errors": errors[0],
            "p50_ms": 1e3 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1e3 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan")}


def measure(args) -> dict:
    cases = {"xor": ("xor", (2, 4, 1)), "digits": ("digits", (64, 64, 10))}
    results: dict = {"rounds": args.rounds, "seconds": args.seconds, "spread": args.spread,
                     "channels": args.channels, "in_flight": args.in_flight}
    with tempfile.TemporaryDirectory(prefix="jitnet-workers-") as work:
        workdir = Path(work)
        servers = {n: Server(workdir, n) for n in (1, 2)}
        try:
            for server in servers.values():
                for model, sizes in cases.values():
                    prepare(server, model, sizes)
                if args.spread:  # worker k on core k (the parent stays on core 0)
                    cores = sorted(common.MACHINE_CORES)
                    for k, pid in enumerate(_children(server.proc.pid)):
                        os.sched_setaffinity(pid, {cores[k % len(cores)]})
            for name, (model, sizes) in cases.items():
                request = _request(model, sizes[0])
                runs = {1: [], 2: []}
                for k in range(args.rounds):
                    for n in ((1, 2) if k % 2 == 0 else (2, 1)):  # ABBA
                        r = run_client(servers[n].port, request, args.channels, args.in_flight,
                                       args.seconds, args.warmup, servers[n])
                        r["cpu_us_per_call"] = 1e6 * r["server_cpu_s"] / max(1, r["calls"])
                        runs[n].append(r)
                results[name] = {
                    n: {key: statistics.median(r[key] for r in rs)
                        for key in ("qps", "p50_ms", "p99_ms", "cpu_us_per_call")}
                    | {"errors": sum(r["errors"] for r in rs)}
                    for n, rs in runs.items()}
        finally:
            for server in servers.values():
                server.stop()
    return results


def report(results: dict, quick: bool) -> str:
    rows, verdicts = [], []
    for name, title in (("xor", "Predict XOR 2-4-1, 1 sample"),
                        ("digits", "Predict digits 64-64-10, 1 sample")):
        case = results[name]
        for n in (1, 2):
            r = case[n]
            rows.append(f"| {title if n == 1 else ''} | {n} | {r['qps']:,.0f} | "
                        f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
                        f"{r['cpu_us_per_call']:.0f} |")
        ratio = case[2]["cpu_us_per_call"] / case[1]["cpu_us_per_call"]
        met = "met" if ratio <= MAX_CPU_RATIO else "**not met**"
        verdicts.append(f"| {title}: server CPU per call, 2 workers / 1 | **{ratio:.3f}x** | "
                        f"<= {MAX_CPU_RATIO}x | {met} |")
    layout = ("worker k pinned to core k (the second shares its core with the client)"
              if results["spread"] else "every server process pinned to core 0")
    setup = textwrap.fill(
        f"`python benchmarks/workers.py{' --quick' if quick else ''}"
        f"{' --spread' if results['spread'] else ''}`, {datetime.date.today()}: {layout}; the "
        f"load client (grpc.aio, {results['in_flight']} calls in flight over "
        f"{results['channels']} channels) on core 1; {results['rounds']} round(s) of "
        f"{results['seconds']:g} s per server, alternating; medians. Each worker has "
        f"specialised the model's architecture before the rounds. Load average "
        f"{results['load_average'][0]:.1f} at the start, {results['load_average'][1]:.1f} at the "
        f"end (this run's own processes count).", 96)
    text = textwrap.dedent(f"""\
        {SECTION}

        {{setup}}

        | case | workers | QPS | p50 ms | p99 ms | errors | CPU us/call |
        |---|---:|---:|---:|---:|---:|---:|
        {{rows}}

        | target | measured | target | result |
        |---|---|---|---|
        {{verdicts}}

        Why CPU per call: on this 2-core machine the client takes one core and the workers
        share the other, so two workers cannot show more throughput here than one. What counts
        is the CPU a call costs: if it does not grow with the workers, throughput grows with the
        cores the workers get on a bigger host, as each worker is a whole server (its own
        interpreter, no GIL shared) sharing only the port and the model store. Two workers
        sharing one core also pay for switching between two processes (two interpreters' code
        and data in one core's caches), which `--spread` (a core each, one shared with the
        client) moves but does not remove on two cores.
        """)
    text = text.replace("{setup}", setup).replace("{rows}", "\n".join(rows))
    return text.replace("{verdicts}", "\n".join(verdicts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per server")
    parser.add_argument("--spread", action="store_true",
                        help="worker k on core k, sharing the last core with the client "
                             "(default: every worker on core 0)")
    args = parse_load_arguments(parser, argv)
    results = common.measured(lambda: measure(args))
    common.publish(report(results, args.quick), results, args.json, not args.no_write, SECTION,
                   DOC)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        sys.exit(client_main(sys.argv[2:]))
    sys.exit(main())
