"""What the benchmarks share: moto, the stack, the simulator, the Slack emulator, a child bot."""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bot.local.aws import DEFAULT_REGION, UNSAFE_AWS_VARS, MotoServer, aws_env
from bot.local.net import free_port, wait_http
from bot.local.simulator import RolloutSimulator
from bot.local.slack_emulator import SlackEmulator
from bot.local.stack import StackInfo, create_stack
from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
DEPLOYS, RANDOM = "C0DEPLOYS", "C0RANDOM"
BOT_TOKEN = "xoxb-bench-bot-token-1a2b3c"
APP_TOKEN = "xapp-bench-app-token-4d5e6f"
SIGNING_SECRET = "bench-signing-secret-7a8b9c"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"   machine: {machine()}")


@dataclass
class Child:
    """A server in a child process; stopped with SIGTERM (SIGKILL if it lingers)."""

    args: list[str]
    env: dict[str, str]
    port: int
    health: str = "/healthz"
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = field(
        default_factory=lambda: tempfile.mktemp(prefix="deploybot-bench-", suffix=".log")
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Child:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        wait_http(self.url + self.health, timeout=30)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


class Lab:
    """moto with the stack in it, the rollout simulator, the Slack emulator; and child bots."""

    def __init__(self, poll_seconds: float = 0.5, step_seconds: float = 0.25) -> None:
        self.poll_seconds = poll_seconds
        self.step_seconds = step_seconds
        self.moto = MotoServer()
        self.emulator = SlackEmulator(
            bot_token=BOT_TOKEN,
            app_token=APP_TOKEN,
            signing_secret=SIGNING_SECRET,
            users={ALICE: "alice", BOB: "bob", CAROL: "carol"},
            channels={DEPLOYS: "deploys", RANDOM: "random"},
        )
        self.simulator: RolloutSimulator | None = None
        self.info: StackInfo | None = None
        self.settings: Settings | None = None
        self.children: list[Child] = []

    def __enter__(self) -> Lab:
        self.moto.start()
        for name in UNSAFE_AWS_VARS:
            os.environ.pop(name, None)
        os.environ.update(aws_env(self.moto.endpoint_url, DEFAULT_REGION))
        os.environ["ROLLOUT_POLL_SECONDS"] = str(self.poll_seconds)
        os.environ["ROLLOUT_TIMEOUT_SECONDS"] = "120"
        self.settings = Settings(_env_file=None)  # type: ignore[call-arg]
        self.info = create_stack(self.moto.endpoint_url, self.settings)
        self.moto.requests.clear()
        self.simulator = RolloutSimulator(self.moto, step_seconds=self.step_seconds).start()
        self.emulator.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in self.children:
            child.stop()
        self.emulator.stop()
        if self.simulator is not None:
            self.simulator.stop()
        self.moto.stop()

    def bot_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=self.emulator.api_url,
            SLACK_CHANNEL=DEPLOYS,
            DEPLOY_ALLOWED_USERS=f"{ALICE},{BOB}",
            DEPLOY_ALLOWED_CHANNELS=f"{DEPLOYS},{RANDOM}",
        )
        env.update(extra)
        return env

    def start_bot(self, **extra: str) -> Child:
        """``deploybot serve --http`` as a child process, pointed at moto and the emulator."""
        port = free_port()
        args = [sys.executable, "-m", "bot", "serve", "--http", "--host", "127.0.0.1"]
        child = Child([*args, "--port", str(port)], self.bot_env(**extra), port)
        self.children.append(child)
        return child.start()

    def start_bare_bolt(self, answer: bool = False) -> Child:
        """The baseline: a Bolt AsyncApp that only acks (``answer``: acks and answers once on
        the response_url), served the way the bot is."""
        port = free_port()
        args = [sys.executable, str(ROOT / "bench" / "bare_bolt.py"), "--port", str(port)]
        args += ["--answer"] if answer else []
        child = Child(args, self.bot_env(), port)
        self.children.append(child)
        return child.start()
