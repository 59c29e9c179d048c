"""``deploybot status`` against the original recipe's four ``aws`` CLI calls, on one moto server.

The original ``make status`` ran describe-services, list-tasks, describe-tasks and
describe-network-interfaces (for the tasks' public IPs) with the AWS CLI. The CLI is not on
the machine: it is installed into a throwaway venv (uv, from PyPI) at bench time. Both are
timed with hyperfine if installed (else a Python timer), same number of runs, after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.lab import ROOT, Lab, header, mean_sd

AWSCLI_VENV = Path(tempfile.gettempdir()) / "deploybot-bench-awscli"

RECIPE = """#!/bin/bash
# The original `make status`: four AWS CLI calls.
set -euo pipefail
AWS={aws}
CLUSTER={cluster}
SERVICE={service}
$AWS ecs describe-services --cluster "$CLUSTER" --services "$SERVICE" \\
  --query 'services[0].{{status:status,desired:desiredCount,running:runningCount}}' \\
  --output table
TASKS=$($AWS ecs list-tasks --cluster "$CLUSTER" --service-name "$SERVICE" \\
  --query 'taskArns[]' --output text)
ENIS=$($AWS ecs describe-tasks --cluster "$CLUSTER" --tasks $TASKS \\
  --query 'tasks[].attachments[].details[?name==`networkInterfaceId`].value' --output text)
$AWS ec2 describe-network-interfaces --network-interface-ids $ENIS \\
  --query 'NetworkInterfaces[].{{eni:NetworkInterfaceId,ip:Association.PublicIp}}' --output table
"""


def awscli() -> str:
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(AWSCLI_VENV)], check=True)
        subprocess.run(
            [
                "uv",
                "pip",
                "install",
                "-q",
                "--python",
                str(AWSCLI_VENV / "bin" / "python"),
                "awscli",
            ],
            check=True,
        )
    return str(aws)


def python_timer(
    commands: dict[str, str], runs: int, env: dict[str, str]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, cmd in commands.items():
        subprocess.run(["bash", "-c", cmd], check=True, env=env, capture_output=True)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(["bash", "-c", cmd], check=True, env=env, capture_output=True)
            times.append(time.perf_counter() - started)
        out[name] = times
    return out


def hyperfine(commands: dict[str, str], runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as export:
        args = ["hyperfine", "--warmup", "2", "--runs", str(runs), "--export-json", export.name]
        for name, cmd in commands.items():
            args += ["-n", name, cmd]
        subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
        data = json.loads(Path(export.name).read_text())
    return {r["command"]: r["times"] for r in data["results"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    aws = awscli()
    version = subprocess.run([aws, "--version"], capture_output=True, text=True).stdout.strip()
    timer = "hyperfine" if shutil.which("hyperfine") else "python timer"
    header(f"status: {args.runs} runs each ({timer}); baseline {version}")
    with Lab() as lab:
        settings = lab.settings
        assert settings is not None
        recipe = Path(tempfile.mkdtemp()) / "original-status.sh"
        recipe.write_text(
            RECIPE.format(aws=aws, cluster=settings.ecs_cluster, service=settings.ecs_service)
        )
        recipe.chmod(0o755)
        env = dict(os.environ)
        commands = {
            "deploybot status": f"{ROOT / '.venv' / 'bin' / 'deploybot'} status",
            "original recipe (4 aws calls)": f"bash {recipe}",
            "uv run deploybot status": f"cd {ROOT} && uv run --frozen --quiet deploybot status",
        }
        for cmd in commands.values():  # both must work before they are timed
            subprocess.run(["bash", "-c", cmd], check=True, env=env, capture_output=True)
        lab.moto.requests.clear()
        subprocess.run(
            ["bash", "-c", commands["deploybot status"]], check=True, env=env, capture_output=True
        )
        ours = len(lab.moto.requests)
        lab.moto.requests.clear()
        subprocess.run(
            ["bash", "-c", commands["original recipe (4 aws calls)"]], env=env, capture_output=True
        )
        theirs = len(lab.moto.requests)
        times = (hyperfine if timer == "hyperfine" else python_timer)(commands, args.runs, env)
    print(f"\n   {'command':32} {'mean s':>7} {'sd s':>6} {'min s':>6} {'max s':>6} AWS calls")
    for (name, t), calls in zip(times.items(), (ours, theirs, ours), strict=True):
        m, sd = mean_sd(t)
        print(f"   {name:32} {m:7.3f} {sd:6.3f} {min(t):6.3f} {max(t):6.3f} {calls:>9}")
    (_, a), (_, b), _ = times.items()
    print(f"   deploybot status / original: {mean_sd(a)[0] / mean_sd(b)[0]:.2f} (goal: < 1)")
    print("   (`make status` runs `uv run --frozen deploybot status` after `uv sync`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
