"""Prints the fault-injection table (tests/faults/harness.py) at the end of the run."""

from tests.faults import harness


def pytest_terminal_summary(terminalreporter):
    text = harness.table()
    if text:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(text)
