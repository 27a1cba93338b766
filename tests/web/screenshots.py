"""The README's screenshots of the playground, made by the walk the browser test checks:

    python -m tests.web.screenshots --out docs/images

writes web-playground.png (XOR trained from the page), web-step.png (the article's step) and
web-playground.txt, the stable text of what they show, which test_browser.py compares with
the page as it is (pixels are never compared: fonts and antialiasing differ by machine).
Needs the test extra (Playwright) and Debian's chromium; a server runs in this process on
127.0.0.1 with a temporary data directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from jitnet.service.server import warmup
from tests.support.servers import start_in_process

from .browser import Playground, article_step, browser, snapshot, train_xor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.web.screenshots")
    parser.add_argument("--out", default="docs/images", type=Path,
                        help="where to write them (default docs/images)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warmup.warm_up()
    with tempfile.TemporaryDirectory(prefix="jitnet-screenshots-") as tmp:
        server = start_in_process(Path(tmp) / "data", web_port=0, log_level="WARNING")
        try:
            with browser(Path(tmp) / "profile") as context:
                playground = Playground(context)
                playground.open(server.handle.web.url)
                playground.settled()
                stable = [snapshot(playground, "opened")]
                train_xor(playground)
                playground.screenshot(args.out / "web-playground.png")
                stable.append(snapshot(playground, "XOR trained"))
                article_step(playground)
                playground.screenshot(args.out / "web-step.png")
                stable.append(snapshot(playground, "the article's step"))
                if playground.problems:
                    print("\n".join(playground.problems), file=sys.stderr)
                    return 1
        finally:
            server.close()
    (args.out / "web-playground.txt").write_text("".join(stable))
    print(f"wrote web-playground.png, web-step.png and web-playground.txt in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
