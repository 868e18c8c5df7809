"""The `sentiment-client` reference from its own argparse parser (imdb_sentiment_client.cli)."""

from __future__ import annotations

import argparse

from docs.gen.settings_ref import cell


def _parser() -> argparse.ArgumentParser:
    from imdb_sentiment_client.cli import build_parser

    # No environment: the defaults shown are the code's, not this machine's variables.
    return build_parser(environ={})


def _commands(parser: argparse.ArgumentParser) -> tuple[argparse._SubParsersAction, dict]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    return sub, helps


def _own_actions(parser: argparse.ArgumentParser, top: argparse.ArgumentParser | None):
    """The parser's arguments, less --help and (for a command) the connection options it
    shares with the top level."""
    shared = set()
    if top is not None:
        shared = {flag for a in top._actions for flag in a.option_strings}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings and set(action.option_strings) <= shared:
            continue
        yield action


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        # A metavar such as FILE|-: the pipe would split the table's cell.
        return " or ".join(f"`{part}`" for part in (action.metavar or action.dest).split("|"))
    names = " / ".join(f"`{flag}`" for flag in action.option_strings)
    if action.nargs != 0:
        if action.choices:
            names += " `{" + ",".join(action.choices) + "}`"
        else:
            names += f" `{action.metavar or action.dest.upper()}`"
    return names


def _default(action: argparse.Action) -> str:
    value = action.default
    if value in (None, argparse.SUPPRESS, False) or action.nargs in ("*", "+"):
        return "–"
    return f"`{value}`"


def undocumented() -> list[str]:
    """Commands and arguments of sentiment-client with no help text."""
    parser = _parser()
    missing = [f"sentiment-client {_name(a)}" for a in _own_actions(parser, None) if not a.help]
    sub, helps = _commands(parser)
    for command, subparser in sub.choices.items():
        if not helps.get(command):
            missing.append(f"command {command}")
        for action in _own_actions(subparser, parser):
            if not action.help:
                missing.append(f"sentiment-client {command} {_name(action)}")
    return missing


def _table(actions) -> list[str]:
    lines = ["| argument | default | what it does |", "|---|---|---|"]
    for action in actions:
        lines.append(f"| {_name(action)} | {_default(action)} | {cell(action.help or '')} |")
    return lines


def render() -> str:
    parser = _parser()
    sub, helps = _commands(parser)
    lines = [
        "Generated from the parser of `sentiment-client` (`imdb_sentiment_client/cli.py`) at "
        "build time.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "### Options of every command",
        "",
        "They go before or after the command (`sentiment-client --target H:P info` or "
        "`sentiment-client info --target H:P`).",
        "",
        *_table(_own_actions(parser, None)),
        "",
    ]
    for command, subparser in sub.choices.items():
        lines += [
            f"### `{command}`",
            "",
            f"{helps.get(command, '')}.",
            "",
            "```text",
            subparser.format_usage().strip().replace("usage: ", ""),
            "```",
            "",
        ]
        own = list(_own_actions(subparser, parser))
        lines += [*_table(own), ""] if own else ["No arguments of its own.", ""]
    return "\n".join(lines)
