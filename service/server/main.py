"""The command line of a server: one process (lifecycle.py), or with `--workers` above 1 the
parent of that many (workers.py). `jitnet serve` and `python -m jitnet.service.server` run it."""

from __future__ import annotations

import argparse
import sys

from .. import config as config_module
from ..config import Config, ConfigError
from . import lifecycle, workers


def run(config: Config) -> int:
    """Serves until SIGTERM or SIGINT; returns the process exit code. With config.workers
    above 1, runs the parent of that many server processes instead."""
    if config.workers > 1:
        return workers.run(config)
    return lifecycle.serve(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jitnet.service.server",
                                     description="Serve jitnet's NetworkService and the "
                                                 "Open Inference Protocol.")
    config_module.add_arguments(parser)
    try:
        config = Config.from_namespace(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(config)
