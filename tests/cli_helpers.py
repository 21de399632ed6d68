"""Checking that command-line parsers explain themselves (shared by the daemon's and the
function's CLI tests)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def commands(parser: argparse.ArgumentParser,
             path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) for *parser* and every sub-command under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def undocumented(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """What *parser* leaves unexplained: a command without a description, an option or argument
    without help, an option whose default its help does not state."""
    problems = []
    leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    if leaf and not parser.description:
        problems.append(f"{path}: no description")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction
                      | argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue  # help itself, and deliberately hidden (deprecated) aliases
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            problems.append(f"{path} {name}: no help")
        elif (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
              and "default" not in action.help):
            problems.append(f"{path} {name}: its default {action.default!r} is not stated")
    return problems
