"""Every test folder shares one harness: tests/support (fixtures, request builders, waits)."""

pytest_plugins = ("tests.support.fixtures", "tests.support.postgres")


def pytest_terminal_summary(terminalreporter):
    from tests.support.stored import SUMMARY  # filled by the tests: fuzz cases run, soak figures

    if SUMMARY:
        terminalreporter.section("reliability")
        for key, value in SUMMARY.items():
            terminalreporter.write_line(f"{key}: {value}")
