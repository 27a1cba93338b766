"""Every test folder shares one harness: tests/support (servers, fixtures, requests, waits)."""

import pytest

pytest_plugins = ("tests.support.fixtures", "tests.support.postgres")

# Fixtures that start server processes (or nginx): a test using one is slow, so that
# `pytest -m "not slow"` is a quick run (CI runs everything). Such tests say so with
# `@pytest.mark.slow`; one that does not is marked here all the same.
PROCESS_FIXTURES = {"spawn", "stack", "fresh_stack"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter):
    from tests.support.stored import SUMMARY  # filled by the tests: fuzz cases run, soak figures

    if SUMMARY:
        terminalreporter.section("reliability")
        for key, value in SUMMARY.items():
            terminalreporter.write_line(f"{key}: {value}")
