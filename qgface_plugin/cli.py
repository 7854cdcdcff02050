"""Conventions every command-line tool in ``tools/`` shares (one home):

- every flag has help text and ``--help`` shows its default (:class:`HelpFormatter`);
- ``--workers N``: N worker processes/threads; ``0`` = none, the work runs in the calling process/thread;
  left out = a default that the tool's help states;
- exit codes: 0 done, 1 the work ran and failed (a check that did not pass, an evaluator that crashed),
  2 bad input (flags, configs, data: the same code argparse uses); errors print one line
  ``<tool>: error: <message>`` on stderr (:func:`error`), as argparse's own do;
- ``main(argv=None) -> int`` and ``sys.exit(main())``; tools import the installed package (``pip install -e .``,
  part of ``make install``), never patch ``sys.path``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "HelpFormatter", "parser", "error"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every flag's default, unless the flag is required or its help already says it."""

    def _get_help_string(self, action):
        if action.required or "default" in (action.help or "").lower():
            return action.help
        if isinstance(action.default, (list, tuple)):  # a list as it is typed: 8 12 16 20
            shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default) or "none"
            return f"{action.help} (default: {shown.replace('%', '%%')})"
        return super()._get_help_string(action)


class _DescriptionFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks (a tool's module docstring)."""


def parser(description: str | None = None, prog: str | None = None, raw_description: bool = True,
           **kwargs) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared help formatter (the description's own layout kept by default)."""
    fmt = _DescriptionFormatter if raw_description else HelpFormatter
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=fmt, **kwargs)


def error(message, prog: str | None = None, code: int = EXIT_BAD_INPUT) -> int:
    """Print ``<prog>: error: <message>`` on stderr (``prog`` defaults to the running script's name) and return
    ``code`` (2 = bad input), for ``return error(exc)`` in a tool's ``main``."""
    prog = prog or os.path.basename(sys.argv[0] or "qgface")
    print(f"{prog}: error: {worker_message(message)}", file=sys.stderr)
    return code


def worker_message(exc) -> str:
    """The message of ``exc`` without the wrapping torch adds when it re-raises an error of a DataLoader worker
    (``Caught E in DataLoader worker process 0.`` and the worker's traceback): what the worker raised, and
    which worker. Other messages are returned as they are."""
    text = str(exc)
    match = re.match(r"Caught (\w+) in (DataLoader worker process \d+)\.\nOriginal Traceback", text)
    if match is None:
        return text
    name, where = match.groups()
    raised = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, re.MULTILINE))  # the traceback's last line
    return f"{text[raised[-1].end():].rstrip()} (in {where})" if raised else text
