"""README.md is a contract: every `python -m ...` and `python bench/...` command it shows (code
blocks and inline code) parses with the command's real parser, so a reader never meets an unknown
argument. Nothing runs: tests/readme_command_check.py stops each command once it has parsed
(argparse's parse_args, absl's app.run with the config file loaded and every --config.* override
applied). An inline `--config.x=v` override must parse with at least one of configs/*.py.
"""

import json
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHECKER = ROOT / "tests" / "readme_command_check.py"
# The project's own commands; `python -m pytest` and `pip` belong to others.
# Inline overrides name no config: each config file is tried (ANY_CONFIG is replaced by each).
ANY_CONFIG = "--config=ANY"
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.py"))
COMMAND = re.compile(r"python (?:-m ((?:ifdd_jax|data_pipeline|bench)[\w.]*)|(bench/\w+\.py))")


def _shell_lines(markdown: str) -> list[str]:
    """Lines of the fenced code blocks (continuations joined) and the inline code spans."""
    lines, fenced = [], False
    for block_line in re.sub(r"\\\n\s*", " ", markdown).splitlines():
        if block_line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(block_line)
        else:
            lines.extend(re.findall(r"`([^`]+)`", block_line))
    return lines


def readme_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """(target, argv) for every project command in the README."""
    commands = []
    for line in _shell_lines(markdown):
        for match in COMMAND.finditer(line):
            rest = line[match.end() :]
            # A command ends where the shell or an enclosing quote ends it (srun, gcloud --command).
            rest = re.split(r"&&|;|\||\"", rest)[0]
            commands.append((match.group(1) or match.group(2), shlex.split(rest, comments=True)))
        if line.startswith("--config.") and "python" not in line:
            overrides = [arg for arg in shlex.split(line) if "=" in arg]
            if overrides:
                argv = [ANY_CONFIG, "--workdir=runs/x", *overrides]
                commands.append(("ifdd_jax.main", argv))
    return commands


def _source(target: str) -> str:
    path = ROOT / target if target.endswith(".py") else ROOT / target.replace(".", "/")
    if path.is_dir():
        path = path / "__main__.py"
    elif not target.endswith(".py"):
        path = path.with_suffix(".py")
    return path.read_text()


def _check(targets: dict[str, list[list[str]]]) -> list[str]:
    """Runs the checker on each target's argument lists; returns one problem line per failure."""
    proc = subprocess.run(
        [sys.executable, str(CHECKER), json.dumps(targets)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return [f"{sorted(targets)}: the checker failed: {proc.stderr[-2000:]}"]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return [
        f"{target} {shlex.join(argv)}\n    {error}"
        for target, argvs in targets.items()
        for argv, error in zip(argvs, results[target])
        if error
    ]


def test_readme_has_the_commands():
    targets = {target for target, _ in readme_commands(README.read_text())}
    for expected in ("ifdd_jax.main", "ifdd_jax.predict", "ifdd_jax.analysis.tsne", "bench/"):
        assert any(t.startswith(expected) for t in targets), f"no {expected} command found"


def test_extraction_splits_shell_and_quotes():
    text = "```bash\nsrun -n 2 python -m ifdd_jax.main --a=1 \\\n  --b 2 # note\n```\n"
    text += 'x `gcloud --command="cd x && python -m ifdd_jax.folds --pattern p"` y\n'
    assert readme_commands(text) == [
        ("ifdd_jax.main", ["--a=1", "--b", "2"]),
        ("ifdd_jax.folds", ["--pattern", "p"]),
    ]


def test_checker_reports_unknown_arguments():
    problems = _check({"ifdd_jax.folds": [["--pattern", "p"], ["--bogus", "1"]]})
    assert len(problems) == 1 and "--bogus" in problems[0]


@pytest.mark.parametrize("kind", ["argparse", "absl"])
def test_readme_commands_parse(kind: str):
    grouped = defaultdict(list)
    for target, argv in readme_commands(README.read_text()):
        grouped[target].append(argv)
    is_absl = {target: "app.run(" in _source(target) for target in grouped}
    # argparse commands share one process; each absl command needs its own (global FLAGS).
    if kind == "argparse":
        batches = [{t: a for t, a in grouped.items() if not is_absl[t]}]
    else:
        batches = [{t: a} for t, a in grouped.items() if is_absl[t]]
    problems = [problem for batch in batches for problem in _check(_expand(batch))]
    problems = _any_config_passes(problems)
    assert not problems, "README commands that do not parse:\n" + "\n".join(problems)


def _expand(batch: dict[str, list[list[str]]]) -> dict[str, list[list[str]]]:
    """Each ANY_CONFIG argument list once per config file."""
    out = {}
    for target, argvs in batch.items():
        out[target] = [
            [f"--config={config}" if arg == ANY_CONFIG else arg for arg in argv]
            for argv in argvs
            for config in (CONFIGS if ANY_CONFIG in argv else [None])
        ]
    return out


def _any_config_passes(problems: list[str]) -> list[str]:
    """An inline override's problems, dropped when another config file accepted it (its lines
    then number fewer than the config files)."""
    by_overrides: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        head = problem.split("\n")[0]
        if "--workdir=runs/x" in head:
            by_overrides[head.split("--workdir=runs/x", 1)[1]].append(problem)
    kept = [p for p in problems if "--workdir=runs/x" not in p.split("\n")[0]]
    for overrides, failures in by_overrides.items():
        if len(failures) == len(CONFIGS):
            kept.append(f"no config in {CONFIGS} accepts{overrides}:\n" + "\n".join(failures))
    return kept
