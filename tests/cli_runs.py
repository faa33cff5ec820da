"""Running the ``fidkit`` command in-process (``main([...])``) and reading what it printed.

Each helper keeps the name it had in the test module it came from, so the tests read as they did there.
"""

from __future__ import annotations

import pytest

from fidkit.cli import main


def error_line(err) -> str:
    """The one ``fidkit: error:`` line of `err`: stderr's text, or what capsys captured."""
    err = getattr(err, "err", err)
    lines = [line for line in err.splitlines() if line.startswith("fidkit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _run_cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.err


def _assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status in (1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], err
