"""The playground in a real browser: Debian's chromium driven by Playwright for Python (never
`playwright install`, which downloads browsers), with a fresh profile each time. Shared by the
browser test (test_browser.py) and the command that makes the README's screenshots
(screenshots.py), which walk the same steps: so the screenshots show what the test checked.

Waits poll with page.evaluate (the devtools protocol, which the page's Content-Security-Policy
does not cover; Playwright's wait_for_function compiles its predicate in the page, which the
policy forbids). The page draws as data arrives, without requestAnimationFrame, so what these
read is there even where headless Chromium throttles animation frames.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1320, "height": 1000}
TRAIN_SECONDS = 90.0  # XOR to the demo's target takes about 2 s here; bounded for a busy CI
XOR = [(0.0, 0.0, 0), (0.0, 1.0, 1), (1.0, 0.0, 1), (1.0, 1.0, 0)]  # inputs and the class
TARGET_LOSS = 0.001  # the demo's (and the README's) XOR target


@contextlib.contextmanager
def browser(profile: Path):
    """A Chromium context with the fresh profile `profile`; closed (by Playwright, which
    started it, by its pid) at the end. Debian's chromium must be there: the browser tests
    fail without it rather than skip (scripts/test installs it; Playwright never downloads)."""
    assert Path(CHROMIUM).exists(), (f"no {CHROMIUM}: apt-get install chromium "
                                     "(bash scripts/test does)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=ARGS, viewport=VIEWPORT,
            device_scale_factor=1)
        try:
            yield context
        finally:
            context.close()


class Playground:
    """One tab of the page, its console and page errors collected."""

    def __init__(self, context: BrowserContext):
        self.page: Page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def wait(self, expression: str, timeout: float = 20.0, what: str = ""):
        """Until `expression` (JavaScript) is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for "
                                     f"{what or expression}; status: {self.status()!r}, "
                                     f"problems: {self.problems}")
            time.sleep(0.05)

    def status(self) -> str:
        return self.js("document.getElementById('status').textContent")

    def state(self) -> str:
        return self.js("document.getElementById('status').dataset.state")

    def open(self, url: str) -> float:
        """Opens the page; ms from the navigation's start to the first network drawn."""
        self.page.goto(url)
        self.wait("window.playground && window.playground.firstNetworkMs !== null", 30,
                  "the first network drawn")
        self.wait("document.getElementById('status').dataset.state === 'idle'", 30, "ready")
        return self.js("window.playground.firstNetworkMs")

    def version(self) -> int:
        return int(self.js("document.getElementById('model-version').textContent"))

    def settled(self, timeout: float = 20.0) -> int:
        """Until the network and the surface are drawn for the model's current version."""
        self.wait("""(() => {
            const v = document.getElementById('model-version').textContent;
            const net = document.getElementById('network').dataset.version;
            const surface = document.getElementById('surface').dataset.version;
            return net === v && (surface === undefined || surface === v);
        })()""", timeout, "the network and surface of the last version")
        return self.version()

    def weights(self) -> list[float]:
        return self.js("[...document.querySelectorAll('#network line')]"
                       ".map((l) => Number(l.dataset.w))")

    def curve(self) -> dict:
        return self.js("({...document.getElementById('loss-curve').dataset})")

    def surface_classes(self) -> list[int]:
        """The class the drawn surface shows at each XOR input: 1 where its pixel is blue
        (output above 0.5), 0 where orange (below)."""
        points = json.dumps([[x, y] for x, y, _ in XOR])
        return self.js(f"""(() => {{
            const c = document.getElementById('surface');
            const d = c.dataset, context = c.getContext('2d');
            return {points}.map(([x, y]) => {{
                const px = Math.round((x - d.x0) / (d.x1 - d.x0) * c.width);
                const py = Math.round(c.height - (y - d.y0) / (d.y1 - d.y0) * c.height);
                const [r, g, b] = context.getImageData(px, py, 1, 1).data;
                return b > r ? 1 : 0;
            }});
        }})()""")

    def train(self, timeout: float = TRAIN_SECONDS) -> None:
        """Play, until the Train's stream has ended (the loss target or the epochs)."""
        self.page.click("#play")
        self.wait("document.getElementById('status').dataset.state === 'training'", 20,
                  "training to start")
        self.wait("document.getElementById('status').dataset.state !== 'training'", timeout,
                  "the training to end")

    def step_table(self) -> dict[tuple[str, int], dict[str, float]]:
        """(layer tag, neuron number) -> {net, output, error, delta: the numbers shown, read
        back from their text; weights: the row shown after the update}."""
        rows = self.js("""[...document.querySelectorAll('#step-table tbody tr')].map((tr) => ({
            layer: tr.dataset.layer, neuron: Number(tr.dataset.neuron),
            cells: Object.fromEntries([...tr.querySelectorAll('td[data-field]')]
                .map((td) => [td.dataset.field, td.textContent]))}))""")
        table = {}
        for row in rows:
            cells = row["cells"]
            numbers = {k: float(cells[k]) for k in ("net", "output", "error", "delta")}
            numbers["weights"] = [float(v) for v in cells["weights"].split()]
            table[(row["layer"], row["neuron"])] = numbers
        return table

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)


# -- the walk the test checks and the screenshots show ----------------------------------------


def train_xor(playground: Playground) -> None:
    """The page's defaults are the demo's XOR: 2-4-1 with biases, U[0, 1) weights (seed 0),
    learning rate 0.5, one sample at a time, until the loss is 0.001."""
    playground.train()
    playground.settled()


def article_network(playground: Playground) -> None:
    """The article's 2-4-1 in one click: its weights, XOR, its learning rate and sample."""
    playground.page.click("#article")
    playground.wait("document.getElementById('status').textContent.includes('article')", 20,
                    "the article's network")
    playground.settled()


def one_step(playground: Playground) -> None:
    """One step on the chosen sample, until its numbers and drawing are shown."""
    version = playground.version()
    playground.page.click("#one-step")
    playground.wait(f"document.getElementById('step-table').dataset.version === "
                    f"'{version + 1}'", 20, "the step")
    playground.wait("document.getElementById('step-drawing').naturalWidth > 0", 20,
                    "the step's drawing")
    playground.settled()


def article_step(playground: Playground) -> None:
    """The article's network, then one step on its sample (0, 1) -> 1 at learning rate
    0.001."""
    article_network(playground)
    one_step(playground)


# What the screenshots show that does not change from run to run: the page's words (its
# headings, labels and buttons), and after each step of the walk the status line, the
# counters, the weights drawn (4 decimals) and the step's explanation and numbers. Model ids
# (made by the server) and the port are replaced by names.
def snapshot(playground: Playground, stage: str) -> str:
    text = playground.js("""(() => {
        const words = (selector) => [...document.querySelectorAll(selector)]
            .map((el) => el.childNodes[0] ? el.childNodes[0].textContent.trim() : '')
            .filter(Boolean);
        const id = (name) => document.getElementById(name).textContent;
        return [
            'status: ' + id('status'),
            'model: ' + id('model-describe') + ', version ' + id('model-version'),
            'epoch ' + id('epoch-count') + ', iterations ' + id('iterations') + ', loss ' +
                id('loss-value'),
            'weights: ' + [...document.querySelectorAll('#network line')]
                .map((l) => Number(l.dataset.w).toFixed(4)).join(' '),
            'curve: ' + (document.getElementById('loss-curve').dataset.count || '0') + ' points',
            'terminal: ' + id('terminal'),
            'step:', id('step-explain'),
            ...[...document.querySelectorAll('#step-table tbody tr')]
                .map((tr) => [...tr.children].map((td) => td.textContent).join(' | ')),
            'words: ' + words('h1, h2, h3, label, button').join(' / '),
        ].join('\\n');
    })()""")
    text = re.sub(r"model-[0-9a-f]{12}", "MODEL", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    return f"== {stage}\n{text}\n"
