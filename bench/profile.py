"""py-spy profiles of a running process: a flame graph (SVG) to look at and collapsed stacks
(raw) from which the top entries are computed for the report.

Two `py-spy record --nonblocking` samplers run side by side on the same pid (one per output
format): non-blocking sampling never pauses the process, so the profile does not change the
timing it observes beyond the samplers' own CPU.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.stack import Run

PY_SPY = Path(sys.executable).with_name("py-spy")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass
class Profile:
    name: str
    svg: Path
    raw: Path
    samplers: list[subprocess.Popen[bytes]]

    def finish(self, timeout: float = 30) -> None:
        """Stop sampling now (py-spy writes its output on SIGINT) and wait for the files."""
        for sampler in self.samplers:
            if sampler.poll() is None:
                sampler.send_signal(signal.SIGINT)
        for sampler in self.samplers:
            try:
                sampler.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait()


def start(run: Run, name: str, pid: int, duration: float, rate: int = 100) -> Profile:
    """The flame graph goes to bench/results/<stamp>-<name>.svg, the collapsed stacks and
    py-spy's own output to the run's log folder."""
    svg = run.results_dir / f"{run.stamp}-{name}.svg"
    raw = run.log_dir / f"{name}.txt"
    log = (run.log_dir / f"{name}.py-spy.log").open("ab")
    samplers = [
        subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--rate",
                str(rate),
                "--duration",
                str(int(duration)),
                "--format",
                fmt,
                "--output",
                str(path),
            ],
            stdout=log,
            stderr=log,
        )
        for fmt, path in (("flamegraph", svg), ("raw", raw))
    ]
    return Profile(name, svg, raw, samplers)


def _function(frame: str) -> str:
    """`name (path:line)` -> `name (path)`: samples of one function add up across its lines."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


# Where a sample's time goes: the first of these met walking up from the top of its stack.
LAYERS = (
    ("logging", ("structlog/", "logging/__init__.py", "logging/")),
    (
        "provider HTTP client (aiohttp, yarl, multidict)",
        ("aiohttp/", "yarl/", "multidict/", "aiohappyeyeballs/"),
    ),
    ("postgres (asyncpg)", ("asyncpg/",)),
    ("kafka (aiokafka)", ("aiokafka/", "kafka/")),
    ("validation and JSON (pydantic, orjson, json)", ("pydantic/", "pydantic_core/", "json/")),
    ("HTTP server (uvicorn, starlette)", ("uvicorn/", "starlette/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("service code", ("(service/",)),
)


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return "event loop and other"


def top_entries(raw: Path, limit: int = 12) -> dict[str, object]:
    """Self time (the frame on top of the stack) and total time (anywhere on the stack) per
    function, as shares of all samples, from py-spy's collapsed-stack output."""
    if not raw.exists():
        return {"samples": 0, "self": [], "total": [], "service_total": [], "layers": []}
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f.strip()]
        # py-spy puts the thread/process name first when it knows it; it has no parentheses.
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        layers[_layer(frames)] += count
        for function in set(frames):
            total[function] += count

    def shares(counter: Counter[str], keep: int) -> list[dict[str, object]]:
        return [
            {"function": f, "samples": n, "share": round(n / samples, 4)}
            for f, n in counter.most_common(keep)
        ]

    # The process's entry frames (python -m service) are on every full stack: left out.
    service = Counter(
        {f: n for f, n in total.items() if "(service/" in f and "(service/__main__.py)" not in f}
    )
    return {
        "samples": samples,
        "self": shares(own, limit),
        "total": shares(total, limit),
        "service_total": shares(service, limit),
        "layers": [
            {"layer": name, "share": round(n / samples, 4)} for name, n in layers.most_common()
        ],
    }
