"""Every command in README.md and docs/*.md still works, checked without running it.

Each line of a ```bash block is split into simple commands (``&&``, ``||``, ``;``, ``|``);
``python train.py`` / ``miri-train`` overrides (also under torchrun and sbatch) and those of
the Hydra scripts are composed in-process with the project's configs, the argparse scripts
parse their arguments in-process, and every script named must exist. One real process checks
that the README's first command starts (``--cfg job``). Commands that cannot run here (pip,
virtual environments, cd, TensorBoard, pytest) are skipped; any other command fails the test
until it is taught here.
"""

import argparse
import ast
import contextlib
import functools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "miri_lightning" / "configs"
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 150
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' && pytest"
FIRST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python train.py"

#: Programs whose commands are not checked: installs, shells, viewers, the test runner.
SKIPPED = {"pip", "pip3", "cd", ".", "source", "tensorboard", "nvidia-smi", "pytest"}
#: Console scripts and the Hydra config each composes (miri-impute is argparse, below).
CONSOLE_CONFIGS = {
    "miri-train": "train",
    "miri-evaluate": "evaluate",
    "miri-quality": "quality",
    "miri-export": "export",
}
#: Flags Hydra's command line takes beside overrides; those followed by a value name it.
HYDRA_FLAGS = {"--multirun", "-m", "--help", "-h", "--hydra-help", "--resolve", "--info", "-i"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
SEPARATORS = {"&&", "||", ";", "|"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join(self.tokens)}"


def bash_lines(page: Path) -> list[tuple[int, str]]:
    """The lines of ```bash blocks in ``page`` (continuations joined), with their numbers."""
    found, fence, pending, start = [], None, "", 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence else (stripped[3:].strip() or "text")
            continue
        if fence not in ("bash", "sh", "shell"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        found.append((start, pending + stripped))
        pending = ""
    assert fence is None, f"{page.name}: a code block is never closed"
    return found


def commands() -> list[Command]:
    """Every simple command of every page's bash blocks, comments and env assignments removed."""
    out = []
    for page in PAGES:
        for number, line in bash_lines(page):
            tokens = shlex.split(line, comments=True)
            part: list[str] = []
            for token in [*tokens, ";"]:
                if token in SEPARATORS:
                    while part and ENV_ASSIGNMENT.match(part[0]):
                        part.pop(0)
                    if part:
                        out.append(Command(str(page.relative_to(ROOT)), number, tuple(part)))
                    part = []
                else:
                    part.append(token)
    return out


def hydra_overrides(arguments: list[str]) -> tuple[list[str], bool]:
    """The overrides among a Hydra app's ``arguments`` (flags and ``hydra.*`` dropped), and
    whether the command line asks for a multirun."""
    overrides, multirun, skip_value = [], False, False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument in ("-m", "--multirun"):
            multirun = True
        elif argument in HYDRA_FLAGS:
            pass
        elif argument in HYDRA_FLAGS_WITH_VALUE:
            skip_value = True
        elif argument.startswith("-"):
            raise AssertionError(f"unknown flag {argument!r}")
        elif argument.lstrip("+~").startswith(("hydra.", "hydra/")):
            pass
        else:
            overrides.append(argument)
    return overrides, multirun


def compose_all(config: str, arguments: list[str]) -> list:
    """Compose ``config`` with the overrides of ``arguments``: each job of a multirun."""
    return composed(config, tuple(arguments))


def check_group_options(overrides: list[str]) -> None:
    """Each config group an override picks names an option that exists: Hydra silently skips a
    missing option of an optional default (``experiment=paper_sampel`` would run the default)."""
    for override in OverridesParser.create().parse_overrides(overrides):
        group = CONFIGS / override.key_or_group
        if override.is_delete() or not group.is_dir():
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        missing = [value for value in values if not (group / f"{value}.yaml").is_file()]
        assert not missing, f"{override.key_or_group}={','.join(missing)}: no such option in {group.relative_to(ROOT)}"


@functools.cache  # the pages repeat commands (python train.py, the race's recipes): compose each once
def composed(config: str, arguments: tuple[str, ...]) -> list:
    overrides, multirun = hydra_overrides(list(arguments))
    check_group_options(overrides)
    jobs = [overrides]
    if multirun:
        parsed = OverridesParser.create().parse_overrides(overrides)
        jobs = [list(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return [compose(config, overrides=job) for job in jobs]


#: ``type=`` callables an argparse option may name; any other is read as a string.
TYPES = {"int": int, "float": float, "str": str, "Path": Path}


def literal(node: ast.expr, what: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise AssertionError(f"{what} is not a literal: teach tests/test_docs.py to read it") from None


def calls(tree: ast.AST, method: str) -> list[ast.Call]:
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method
    ]
    return sorted(found, key=lambda node: (node.lineno, node.col_offset))  # positionals parse in source order


def argparse_parser(source: Path) -> argparse.ArgumentParser | None:
    """The parser ``source`` builds, rebuilt from its ``add_argument`` calls without importing it
    (importing a script means importing torch); None if it builds none."""
    tree = ast.parse(source.read_text())
    if not calls(tree, "add_argument"):
        return None
    parser = argparse.ArgumentParser(prog=source.name)
    groups = {}
    for node in ast.walk(tree):
        call = node.value if isinstance(node, ast.Assign) else None
        if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "add_mutually_exclusive_group":
            options = {kw.arg: literal(kw.value, f"{source.name}: a group's {kw.arg}") for kw in call.keywords}
            groups[node.targets[0].id] = parser.add_mutually_exclusive_group(**options)
    for call in calls(tree, "add_argument"):
        owner = groups.get(getattr(call.func.value, "id", None), parser)
        names = [literal(arg, f"{source.name}:{call.lineno}: an option's name") for arg in call.args]
        options = {}
        for kw in call.keywords:
            if kw.arg in ("help", "default", "metavar"):
                continue
            if kw.arg == "type":
                options["type"] = TYPES.get(getattr(kw.value, "id", None), str)
            elif kw.arg == "choices":
                with contextlib.suppress(ValueError):  # computed choices (sorted(STORE_DTYPES)): not checked
                    options["choices"] = ast.literal_eval(kw.value)
            else:
                options[kw.arg] = literal(kw.value, f"{source.name}:{call.lineno}: {kw.arg}=")
        owner.add_argument(*names, **options)
    return parser


def module_file(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def console_module(script: str) -> Path:
    """The source of a console script, as ``pyproject.toml`` names it."""
    entry = re.search(rf'^{re.escape(script)} = "([\w.]+):\w+"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert entry, f"pyproject.toml has no console script {script}"
    return module_file(entry.group(1))


def check_arguments(source: Path, arguments: list[str]) -> None:
    """``arguments`` parse with the argparse parser of ``source``, or of the project module it
    imports its ``main`` from (a thin wrapper such as scripts/impute.py)."""
    parser = argparse_parser(source)
    if parser is None:
        imported = [
            module_file(node.module)
            for node in ast.walk(ast.parse(source.read_text()))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("miri_lightning")
        ]
        parser = next((p for p in map(argparse_parser, filter(Path.is_file, imported)) if p), None)
    assert parser is not None, f"{source.name} builds no argparse parser and composes no Hydra config"
    try:
        parser.parse_args(arguments)
    except SystemExit as exit:
        pytest.fail(f"the arguments do not parse with {source.name}'s options (exit {exit.code})")


def check(command: Command) -> str:
    """Check one command; returns what was checked (``skipped`` for a command not checked)."""
    program, *arguments = command.tokens
    if program in SKIPPED or (program.startswith("python") and arguments[:1] == ["-m"]):
        return "skipped"
    if program in ("torchrun", "srun"):
        script = next(i for i, a in enumerate(arguments) if a.endswith(".py"))
        program, arguments = "python", arguments[script:]
    if program == "sbatch":
        batch = ROOT / arguments[0]
        assert batch.is_file(), f"no {arguments[0]}"
        launch = re.search(r"^\s*srun (?:--\S+ )*python train\.py (.*?)\"\$@\"", batch.read_text(), re.M)
        assert launch, f"{arguments[0]} runs no 'srun [--flags] python train.py ... \"$@\"'"
        shown = [o for o in shlex.split(launch.group(1)) if "${" not in o]  # shell variables: set at run time
        compose_all("train", [*shown, *arguments[1:]])
        return "composed"
    if program in ("bash", "sh"):
        assert (ROOT / arguments[0]).is_file(), f"no {arguments[0]}"
        return "exists"
    if program in CONSOLE_CONFIGS:
        compose_all(CONSOLE_CONFIGS[program], arguments)
        return "composed"
    if program in ("miri-impute", "miri-tables"):
        check_arguments(console_module(program), arguments)
        return "parsed"
    assert program in ("python", "python3"), f"a command the docs test does not know: {program}"
    script, *arguments = arguments
    path = ROOT / script
    assert path.is_file(), f"no {script}"
    config = "train" if script == "train.py" else Path(script).stem
    if (CONFIGS / f"{config}.yaml").is_file():
        composed = compose_all(config, arguments)
        for cfg in composed:
            if config == "race":  # both recipes, with the shared overrides, compose as train.py runs them
                for recipe in (cfg.a, cfg.b):
                    compose_all("train", [f"experiment={recipe}", *cfg.overrides])
            if config == "benchmark" and cfg.benchmark.compare:  # the second variant composes too
                shared = [o for o in hydra_overrides(arguments)[0] if not o.startswith("benchmark.")]
                compose_all("train", [*shared, *cfg.benchmark.compare])
        return "composed"
    check_arguments(path, arguments)
    return "parsed"


@pytest.fixture(scope="module")
def first_command():
    """The README's first ``python train.py`` command with ``--cfg job``, started once and early."""
    first = next(c for c in ALL if c.page == README.name and c.tokens[:2] == ("python", "train.py"))
    command = [sys.executable, *first.tokens[1:], "--cfg", "job"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module", autouse=True)
def start_the_first_command_early(request):
    """The one real process runs while the in-process checks do: it takes most of this file's time.
    (Not under pytest-xdist, whose every worker holds every item: there the test starts it.)"""
    wanted = any(item.name == "test_the_readme_first_command_starts" for item in request.session.items)
    if wanted and not hasattr(request.config, "workerinput"):
        request.getfixturevalue("first_command")


ALL = commands()


@pytest.mark.parametrize("command", ALL, ids=str)
def test_a_documented_command_is_valid(command):
    check(command)


def test_the_docs_hold_commands_of_every_kind():
    """The extraction itself works: the commands the README and docs are known to show."""
    shown = {str(c).split(": ", 1)[1] for c in ALL}
    assert "python train.py" in shown
    assert "python train.py -m miri.ema=0,0.99 mask.rate=0.4,0.6" in shown
    assert any(c.startswith("python scripts/quality.py") for c in shown)
    assert any(c.startswith("python scripts/impute.py") for c in shown)
    assert any(c.startswith("torchrun ") for c in shown)
    assert len(ALL) > 30


def test_a_typo_in_an_override_is_caught():
    """The sabotage the docs test must see: an override that names no key."""
    typos = [
        ("python", "train.py", "miri.roundz=3"),
        ("python", "scripts/quality.py", "quality.samplez=8"),
        ("python", "train.py", "experiment=paper_sampel"),  # an optional group: Hydra alone says nothing
        ("python", "scripts/race.py", "a=paper_sampel"),
    ]
    for tokens in typos:
        with pytest.raises(Exception, match="roundz|samplez|sampel"):
            check(Command("README.md", 0, tokens))
    unknown_option = ("python", "scripts/figure.py", "run", "--itemz", "3")
    no_input = ("miri-impute", "--run", "r", "--output", "o")  # --input or --array is required
    for tokens in (unknown_option, no_input):
        with pytest.raises(pytest.fail.Exception, match="do not parse"):
            check(Command("README.md", 0, tokens))


def test_the_readme_is_one_screen_and_keeps_its_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    blocks = [line for _, line in bash_lines(README)]
    assert blocks[0] == FIRST_COMMAND
    # what .ci/run extracts: the first code block after the marker, verbatim
    marker = next(i for i, line in enumerate(lines) if line.startswith("<!-- test-command"))
    fence = next(i for i in range(marker + 1, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    assert lines[fence + 1 : end] == [TEST_COMMAND]


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code are code
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_the_readme_first_command_starts(first_command):
    """The one real process: ``python train.py --cfg job`` prints the composed config."""
    out, err = first_command.communicate(timeout=120)
    assert first_command.returncode == 0, err[-2000:]
    assert "miri:" in out and "steps_per_round:" in out
