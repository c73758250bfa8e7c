"""Parses command lines against one command's real parser without running the command (a
subprocess of tests/test_readme_commands.py, so that each command's absl flags live in their own
process).

    python tests/readme_command_check.py '{"TARGET": [ARGV, ...], ...}'

TARGET is a module (`ifdd_jax.predict`) or a script (`bench/train_throughput.py`), each ARGV a list
of arguments; argparse commands can share one process, absl commands each need their own. The
command runs as `__main__` until it parses its arguments: argparse's `parse_args` and absl's
`app.run` are replaced by checks that parse and then stop. A list holding "..." (a README
placeholder) is checked by flag names only. Prints, by target, one error string per argument list
("" when it parsed) as JSON.
"""

import argparse
import contextlib
import copy
import io
import json
import runpy
import sys

from absl import app, flags
from ml_collections import config_flags

ELLIPSIS = "..."
# argparse's own parse_args, kept before main() replaces it.
_ORIGINAL_PARSE_ARGS = argparse.ArgumentParser.parse_args


class _Parsed(Exception):
    """Raised once the arguments are parsed, so that the command itself never runs."""


def _flag_names(argv: list[str]) -> list[str]:
    return [arg[2:].split("=")[0] for arg in argv if arg.startswith("--")]


def _check_argparse(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    if ELLIPSIS in argv:
        known = parser._option_string_actions
        unknown = [f"--{name}" for name in _flag_names(argv) if f"--{name}" not in known]
        return f"unknown arguments: {unknown}" if unknown else ""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            _ORIGINAL_PARSE_ARGS(parser, argv)
        except SystemExit as e:
            return stderr.getvalue().strip() or f"exit {e.code}"
    return ""


def _fresh_flag_values() -> flags.FlagValues:
    """The command's flags in a FlagValues of their own: config_flags defines one flag per config
    field when --config is parsed, so the global FLAGS cannot parse a second command line."""
    values = flags.FlagValues()
    unique = {id(flag): flag for flag in flags.FLAGS._flags().values()}  # short names repeat
    for flag in unique.values():
        if flag.name != "config" and "." not in flag.name:
            values[flag.name] = copy.deepcopy(flag)
    if "config" in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "config file", flag_values=values)
    return values


def _check_absl(argv: list[str]) -> str:
    values = _fresh_flag_values()
    if ELLIPSIS in argv:
        unknown = [name for name in _flag_names(argv) if name.split(".")[0] not in values]
        return f"unknown flags: {unknown}" if unknown else ""
    # config_flags finds the --config.* overrides to define in sys.argv, not in the list parsed.
    sys.argv = ["prog", *argv]
    try:
        values(sys.argv)
        if "config" in values:
            _ = values.config  # config_flags applies the --config.* overrides when it is read
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return ""


def _check_target(target: str, argvs: list[list[str]]) -> list[str]:
    errors: list[str] = []

    def parse_args(parser, args=None, namespace=None):
        # The command's own parser: check every argument list against it, then stop the command.
        errors.extend(_check_argparse(parser, argv) for argv in argvs)
        raise _Parsed

    def run(main, argv=None, **kwargs):
        errors.extend(_check_absl(argv) for argv in argvs)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_args
    app.run = run
    sys.argv = [target, *argvs[0]]
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except _Parsed:
        pass
    if len(errors) != len(argvs):
        return [f"{target} did not parse its arguments with argparse or absl"] * len(argvs)
    return errors


def main() -> None:
    targets = json.loads(sys.argv[1])
    print(json.dumps({target: _check_target(target, argvs) for target, argvs in targets.items()}))


if __name__ == "__main__":
    main()
