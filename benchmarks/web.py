"""The playground page's cost to everyone else: one-row Predict QPS from another client while
the page trains, against the same server without the page open, in one run.

    python benchmarks/web.py            # ~1 minute; rewrites `## The playground page` in
                                        # docs/benchmarks.md (nothing else in that file)
    python benchmarks/web.py --quick    # two short rounds each
    python benchmarks/web.py --no-write # print only;  --json FILE also writes the numbers

One server (`jitnet serve --web-port`, the page's HTTP server in the same process) pinned to
core 0, its Predict model's architecture specialised first; the load client (workers.py's
grpc.aio closed loop, one-row XOR Predicts) and a headless Chromium showing the page (Debian's
chromium through Playwright, as tests/web drives it; its helpers are imported from there) on
core 1. Rounds alternate (ABBA) between the page training and no page open: in a "page" round
a fresh tab opens the page, which creates its default model (the demo's XOR 2-4-1), and plays
it for ten million epochs with no loss target at the page's speed `--speed` (default the
page's own, 500 epochs a second: a Train call every tenth of a second, about 20 progress lines
and commits a second; `max` is one Train call as fast as the server goes), the network and the
decision surface redrawn as the lines come, while the client measures; then the tab closes,
which cancels the Train. Medians over rounds; the target is a ratio of at least 0.9. Before
the rounds, one round of the page alone (no load client) shows whether it keeps up with its
speed; each round also times a fresh tab's load to its first drawn network (target 1 s).

    python benchmarks/web.py --speed max    # the page's fastest setting: the worst case
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import common  # siblings: benchmarks/ is on sys.path when run as a script
import workers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.web.browser: the page's Playwright helpers

from tests.web import browser  # noqa: E402 - after the import root is on the path

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## The playground page"
SERVER_CORE, CLIENT_CORE = 0, 1
TARGET_RATIO = 0.9
MODEL = "xor"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`jitnet serve --web-port` on core 0, its log in a file."""

    def __init__(self, workdir: Path):
        self.port, self.web_port = _free_port(), _free_port()
        self.log_path = workdir / "server.log"
        argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
                str(self.port), "--web-port", str(self.web_port), "--data-dir",
                str(workdir / "data"), "--kernel-dir", str(workdir / "kernels"),
                "--specialise-after-predicts", "200"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=common.pinned_to(SERVER_CORE))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def stop(self) -> None:
        common.stop_process(self.proc)


def prepare(server: Server) -> bytes:
    """SERVING, the Predict model made and its architecture specialised; the request bytes."""
    from jitnet.client import Client

    with Client(f"127.0.0.1:{server.port}") as client:
        client.wait_until_serving(900)
        client.create_model([2, 4, 1], init="uniform", model_id=MODEL)
        common.wait_specialised(server.log_path, ("2-4-1",),
                                lambda: client.predict(MODEL, [[0.0, 1.0]]),
                                lambda: server.proc.poll() is None)
    return workers._request(MODEL, 2)


def page_round(context, server: Server, args, during) -> dict:
    """during()'s figures (the load client's, or a sleep's) while a tab of the page trains;
    the page's pace beside."""
    playground = browser.Playground(context)
    try:
        loaded_ms = playground.open(server.url)
        playground.page.fill("#epochs", "10000000")
        playground.page.fill("#target-loss", "0")
        playground.page.select_option("#speed", args.speed)
        playground.page.click("#play")
        playground.wait("Number(document.getElementById('epoch-count').textContent) > 10", 30,
                        "the page training")
        pace = ("[Number(document.getElementById('epoch-count').textContent), "
                "Number(document.getElementById('network').dataset.draws), performance.now()]")
        epochs0, draws0, t0 = playground.js(pace)
        result = during()
        epochs1, draws1, t1 = playground.js(pace)
        seconds = (t1 - t0) / 1e3
        result["page_epochs_per_s"] = (epochs1 - epochs0) / seconds
        result["page_frames_per_s"] = (draws1 - draws0) / seconds
        result["page_problems"] = len(playground.problems)
        result["page_first_network_ms"] = loaded_ms
        if playground.state() != "training":
            raise RuntimeError(f"the page stopped training: {playground.status()}")
    finally:
        playground.page.close()  # leaving the page cancels its Train
    time.sleep(0.5)
    return result


def measure(args) -> dict:
    results: dict = {"rounds": args.rounds, "speed": args.speed, "seconds": args.seconds,
                     "channels": args.channels, "in_flight": args.in_flight}
    with tempfile.TemporaryDirectory(prefix="jitnet-web-") as work:
        workdir = Path(work)
        server = Server(workdir)
        try:
            request = prepare(server)
            common.pin_self(CLIENT_CORE)  # the browser (started now) and the client: core 1
            runs: dict[str, list] = {"page": [], "none": []}
            def load() -> dict:
                return workers.run_client(server.port, request, args.channels, args.in_flight,
                                          args.seconds, args.warmup)

            with browser.browser(workdir / "profile") as context:
                # The page's own pace with nothing else asking: does it keep up with its speed?
                results["alone"] = page_round(context, server, args,
                                              lambda: time.sleep(args.seconds) or {})
                for k in range(args.rounds):
                    for kind in (("page", "none") if k % 2 == 0 else ("none", "page")):
                        if kind == "page":
                            runs[kind].append(page_round(context, server, args, load))
                        else:
                            runs[kind].append(load())
        finally:
            server.stop()
    for kind, rs in runs.items():
        keys = ["qps", "p50_ms", "p99_ms"] + (
            ["page_epochs_per_s", "page_frames_per_s", "page_first_network_ms"]
            if kind == "page" else [])
        results[kind] = {key: statistics.median(r[key] for r in rs) for key in keys}
        results[kind]["errors"] = sum(r["errors"] for r in rs)
        results[kind]["qps_rounds"] = [r["qps"] for r in rs]
    results["page"]["problems"] = sum(r["page_problems"] for r in runs["page"])
    results["ratio"] = results["page"]["qps"] / results["none"]["qps"]
    return results


def report(results: dict, quick: bool) -> str:
    page, none = results["page"], results["none"]
    rows = [f"| {name} | {r['qps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} | {', '.join(f'{q:,.0f}' for q in r['qps_rounds'])} |"
            for name, r in (("no page open", none), ("the page training", page))]
    met = "met" if results["ratio"] >= TARGET_RATIO else "**not met**"
    # A fresh tab on a warm server each time; the target is 1 s.
    pace = [f"| {name} | {r['page_epochs_per_s']:,.0f} | {r['page_frames_per_s']:.1f} | "
            f"{r['page_first_network_ms']:.0f} ms |"
            for name, r in (("alone", results["alone"]),
                            ("beside the load client", page))]
    ratio = (f"| QPS while the page trains / without the page | **{results['ratio']:.3f}x** "
             f"| >= {TARGET_RATIO}x | {met} |")
    setup = textwrap.fill(
        f"`python benchmarks/web.py{' --quick' if quick else ''} --speed {results['speed']}`, "
        f"{datetime.date.today()}: "
        f"one server on core 0 (its page in the same process); the load client (grpc.aio, "
        f"{results['in_flight']} one-row XOR Predicts in flight over {results['channels']} "
        f"channels) and headless Chromium on core 1; {results['rounds']} round(s) of "
        f"{results['seconds']:g} s each way, alternating, after one round of the page "
        f"alone; medians. The page trained the demo's XOR 2-4-1 with no loss target; "
        f"{page['problems'] + results['alone']['page_problems']} console errors. Load "
        f"average {results['load_average'][0]:.1f} at "
        f"the start, {results['load_average'][1]:.1f} at the end (this run's own processes "
        "count).", 96)
    return textwrap.dedent(f"""\
        {SECTION}

        {{setup}}

        | other client's Predict | QPS | p50 ms | p99 ms | errors | QPS per round |
        |---|---:|---:|---:|---:|---|
        {{rows}}

        | the page (speed {results['speed']}) | epochs a second | redraws a second | {{load}} |
        |---|---:|---:|---:|
        {{pace}}

        | target | measured | target | result |
        |---|---|---|---|
        {{ratio}}
        """).replace("{setup}", setup).replace("{rows}", "\n".join(rows)).replace(
            "{pace}", "\n".join(pace)).replace("{ratio}", ratio).replace(
            "{load}", "page load to the first drawn network")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two short rounds each way")
    parser.add_argument("--speed", default="500", choices=("50", "500", "5000", "max"),
                        help="the page's speed setting while it trains (epochs a second)")
    args = workers.parse_load_arguments(parser, argv)
    results = common.measured(lambda: measure(args))
    common.publish(report(results, args.quick), results, args.json, not args.no_write, SECTION,
                   DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
