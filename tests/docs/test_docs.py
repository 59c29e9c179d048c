"""README.md and docs/*.md held against the code: every make target, deploybot command and
flag, and environment variable they name in code (`spans` and fenced blocks) exists.

Sources of truth: the Makefile's rules and variables, bot/cli.py's build_parser(), the
Settings' environment names, the Dockerfiles' ARG/ENV names, the workflows' variables, secrets
and env, and the short lists below.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.cli import build_parser
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Variables that are not ours to define, each with why a page names it.
FOREIGN_VARIABLES = {
    # AWS's own: the CLI and boto3 read them; docs/CICD.md names them as CI's secrets.
    "AWS_ACCESS_KEY_ID": "AWS credentials (CI's secrets)",
    "AWS_SECRET_ACCESS_KEY": "AWS credentials (CI's secrets)",
    "AWS_SESSION_TOKEN": "AWS credentials (CI's secrets)",
    "AWS_DEFAULT_REGION": "the AWS CLI's region fallback",
    "AWS_PROFILE": "the AWS CLI's named profile",
    # GitHub Actions' own: the workflow passes them to `deploybot release-tags`.
    "GITHUB_REF": "set by GitHub Actions for every run",
    "GITHUB_SHA": "set by GitHub Actions for every run",
    # Not a variable: ECS's CpuArchitecture value (RuntimePlatform LINUX/X86_64).
    "X86_64": "a value of the task definitions' RuntimePlatform",
    # Not variables: AWS values in OPERATIONS' two-account walk (ECR replication's filter
    # type; CloudFormation's acknowledgement of a stack that names its IAM role).
    "PREFIX_MATCH": "a value of ECR's replication repositoryFilters",
    "CAPABILITY_NAMED_IAM": "a CloudFormation capability",
    # Not variables: ECS's deployment strategies and the lifecycle stages a PAUSE hook may
    # wait at, values of service.yml's Strategy and PauseStage parameters.
    "BLUE_GREEN": "an ECS deployment strategy",
    "POST_SCALE_UP": "an ECS lifecycle stage",
    "POST_TEST_TRAFFIC_SHIFT": "an ECS lifecycle stage",
    "PRE_PRODUCTION_TRAFFIC_SHIFT": "an ECS lifecycle stage",
    "POST_PRODUCTION_TRAFFIC_SHIFT": "an ECS lifecycle stage",
    # Not ours: the variables a webhooks entry's secret_env names in OPERATIONS' examples
    # (each operator picks its own; bot/notify.py reads whichever is named).
    "HOOK_SECRET": "an example of a webhook's secret_env",
    "PAGER_HOOK_SECRET": "an example of a webhook's secret_env",
    "GRAFANA_TOKEN": "an example of a webhook's secret_env",
    "DD_API_KEY": "an example of a webhook's secret_env",
}
# Variables our code reads outside Settings, with the file that reads each (checked below).
OTHER_OURS = {
    "DEPLOYBOT_USER": "bot/terminal.py",  # who runs a CLI command, recorded in history
    "HEALTHCHECK_PORT": "docker/bot.Dockerfile",  # where the image's health check probes
}


@dataclass(frozen=True)
class Snippet:
    """A piece of code in a page: an inline `span` or one line of a fenced block."""

    page: str
    line: int
    text: str

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text.strip()[:80]}"


def snippets(path: Path) -> Iterator[Snippet]:
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield Snippet(path.name, number, line)
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield Snippet(path.name, number, span)


ALL = [s for page in DOCS for s in snippets(page)]


def makefile_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", text, re.MULTILINE))
    # $(NAME), and $(origin NAME) / $(value NAME), which read a variable without expanding it.
    variables = set(re.findall(r"\$\((?:origin |value )?([A-Z][A-Z0-9_]*)\)", text))
    variables |= set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:?]?=", text, re.MULTILINE))
    return targets, variables


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def make_uses(snippet: Snippet) -> Iterator[tuple[str, list[str]]]:
    """(target, VAR names given) for each `make …` in the snippet."""
    # `make` where a command starts: not `apt-get install make`, not "make: deploybot exited".
    for m in re.finditer(r"(?:^|[;&|(]|\$\()\s*make((?:\s+[^\s;|&)]+)*)", snippet.text):
        words = m.group(1).split()
        given = [w.split("=", 1)[0] for w in words if re.match(r"[A-Z][A-Z0-9_]*=", w)]
        rest = [w for w in words if not re.match(r"[A-Z][A-Z0-9_]*=", w)]
        target = next((w for w in rest if not w.startswith("-")), "")
        if re.fullmatch(r"[a-z][a-z0-9-]*", target):
            yield target, given


def deploybot_uses(snippet: Snippet) -> Iterator[list[str]]:
    """The words after each `deploybot` (up to the end of the command) in the snippet."""
    # Where a command starts, or after `uv run`: not prose ("make: deploybot exited 3").
    start = r"(?:^|[;&|(]|\$\(|uv run(?: --frozen)?)\s*"
    for m in re.finditer(start + r"deploybot\s+([^;|&`\n)]*)", snippet.text):
        yield m.group(1).split()


def make_problems(found: list[Snippet]) -> list[str]:
    targets, variables = makefile_targets_and_variables()
    missing = []
    for snippet in found:
        for target, given in make_uses(snippet):
            if target not in targets:
                missing.append(f"make {target}: no such target ({snippet.where()})")
            for name in given:
                if name not in variables:
                    missing.append(
                        f"{name}=: the Makefile reads no such variable ({snippet.where()})"
                    )
    return missing


def test_every_make_target_and_variable_named_exists() -> None:
    missing = make_problems(ALL)
    assert not missing, "\n".join(missing)


def deploybot_problems(found: list[Snippet]) -> tuple[list[str], int]:
    """What the snippets name that the parser lacks, and how many commands were checked."""
    parser = build_parser()
    commands = subcommands(parser)
    missing = []
    checked = 0
    for snippet in found:
        for words in deploybot_uses(snippet):
            flags = options(parser)
            words = list(words)
            # Options before the command (e.g. --target NAME) belong to the top parser.
            while words and words[0].startswith("-"):
                given = words.pop(0)
                flag = given.split("=", 1)[0]
                if flag not in flags:
                    missing.append(f"deploybot {flag}: no such option ({snippet.where()})")
                action = parser._option_string_actions.get(flag)
                takes_value = action is not None and action.nargs != 0 and "=" not in given
                if words and not words[0].startswith("-") and (takes_value or words[0].isupper()):
                    words.pop(0)  # its value (--target staging) or placeholder (NAME)
            if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                continue  # prose ("deploybot is …"), a placeholder ("COMMAND")
            name = words.pop(0)
            if name not in commands:
                missing.append(f"deploybot {name}: no such command ({snippet.where()})")
                continue
            checked += 1
            sub = commands[name]
            nested = subcommands(sub)
            if nested and words and words[0] in nested:
                sub = nested[words.pop(0)]
            known = options(sub) | options(parser)
            for word in words:
                for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", word):
                    if flag.split("=", 1)[0] not in known:
                        missing.append(
                            f"deploybot {name} {flag}: no such option ({snippet.where()})"
                        )
    return missing, checked


def test_every_deploybot_command_and_flag_named_exists() -> None:
    missing, checked = deploybot_problems(ALL)
    assert not missing, "\n".join(missing)
    assert checked >= 5, "the docs name deploybot's commands; the extraction found too few"


def dockerfile_names() -> set[str]:
    names: set[str] = set()
    for dockerfile in (ROOT / "docker").glob("*Dockerfile"):
        text = dockerfile.read_text(encoding="utf-8")
        names |= set(re.findall(r"^ARG\s+([A-Z][A-Z0-9_]*)", text, re.MULTILINE))
        names |= set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", text))
    return names


def workflow_names() -> set[str]:
    """The repository's variables and secrets the workflows read, and their env: names."""
    names: set[str] = set()
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        text = workflow.read_text(encoding="utf-8")
        names |= set(re.findall(r"\b(?:vars|secrets|env)\.([A-Z][A-Z0-9_]*)", text))
        names |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):", text, re.MULTILINE))
    return names


def settings_names() -> set[str]:
    return {str(f.validation_alias) for f in Settings.model_fields.values()}


def test_other_variables_our_code_reads_are_read_there() -> None:
    for name, path in OTHER_OURS.items():
        assert name in (ROOT / path).read_text(encoding="utf-8"), (name, path)


def variable_problems(found: list[Snippet]) -> list[str]:
    known = settings_names() | makefile_targets_and_variables()[1] | dockerfile_names()
    known |= workflow_names()
    known |= set(FOREIGN_VARIABLES) | set(OTHER_OURS)
    missing = []
    for snippet in found:
        for name in re.findall(r"(?<![\w.-])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b", snippet.text):
            if name not in known:
                missing.append(
                    f"{name}: not a setting, nor a Makefile, Dockerfile or workflow variable "
                    f"({snippet.where()})"
                )
    return missing


def test_every_environment_variable_named_exists() -> None:
    missing = variable_problems(ALL)
    assert not missing, "\n".join(missing)


def test_the_checks_catch_what_they_look_for() -> None:
    """Each check, on snippets naming what does not exist, finds it (and not the rest)."""

    def snip(text: str) -> list[Snippet]:
        return [Snippet("made-up.md", 1, text)]

    assert make_problems(snip("apt-get install make git")) == []
    assert make_problems(snip("make deploy TAG=v1 && make deploy-all")) == [
        "make deploy-all: no such target (made-up.md:1: make deploy TAG=v1 && make deploy-all)"
    ]
    assert len(make_problems(snip("make status VERBOSE=1"))) == 1
    assert len(deploybot_problems(snip("deploybot deploy v1 --force"))[0]) == 1
    assert len(deploybot_problems(snip("uv run deploybot launch"))[0]) == 1
    assert deploybot_problems(snip("deploybot history -n 5"))[0] == []
    assert len(variable_problems(snip("export DEPLOY_SPEED=11 STACK_NAME=x"))) == 1


def test_readme_lists_every_setting() -> None:
    """README's list of settings is complete: each environment name of Settings is there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    absent = sorted(n for n in settings_names() if f"`{n}`" not in text)
    assert not absent, f"README.md does not list {absent}"


def test_operations_lists_every_target_key() -> None:
    """OPERATIONS.md's table of deploybot.toml keys names every key a target may set, with
    its default as the code has it (queue_limit, approval_expiry_minutes …)."""
    from bot.targets import _TargetTable

    text = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in text.splitlines()
        if line.startswith("| `") and len(cells := line.split("|")) > 3
    }
    documented = {key.strip("` ") for name in rows for key in name.split(",")}
    absent = sorted(set(_TargetTable.model_fields) - documented)
    assert not absent, f"docs/OPERATIONS.md does not list {absent}"
    for key in ("queue_limit", "approval_expiry_minutes"):
        default = _TargetTable.model_fields[key].default
        assert rows[f"`{key}`"] == f"`{default}`", key
