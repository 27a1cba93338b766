"""Every test folder shares one harness: tests/support (servers, fixtures, requests, waits)."""

import pytest

pytest_plugins = ("tests.support.fixtures",)

# Fixtures that start server processes (or nginx): a test using one is slow, and must say so
# (`@pytest.mark.slow`), so that `pytest -m "not slow"` is a quick run. CI runs everything.
PROCESS_FIXTURES = {"spawn", "stack", "fresh_stack"}


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if PROCESS_FIXTURES & set(item.fixturenames)
                and not item.get_closest_marker("slow")]
    if unmarked:
        raise pytest.UsageError("tests that start server processes must be marked slow: "
                                + ", ".join(unmarked))


def pytest_terminal_summary(terminalreporter):
    from tests.support.stored import SUMMARY  # filled by the tests: fuzz cases run, soak figures

    if SUMMARY:
        terminalreporter.section("reliability")
        for key, value in SUMMARY.items():
            terminalreporter.write_line(f"{key}: {value}")
