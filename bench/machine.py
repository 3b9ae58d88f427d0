"""One line describing the machine a benchmark ran on: CPU model, cores, RAM, OS,
Python, the Kafka broker's version, and the load average when the run started (on a
shared machine the figures mean little without it).

`python -m bench.machine` prints it.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cores() -> str:
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return f"{usable} cores" if usable == total else f"{usable} of {total} cores"


def ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 ** 2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return "RAM unknown"


def operating_system() -> str:
    name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{name} (kernel {platform.release()})"


def kafka_version(root: Path = ROOT) -> str:
    """The local broker's version (the one `make up` starts): its jar's name in
    `infra/kafka/dist`, or the version `infra/kafka/pom.xml` resolves."""
    for jar in sorted((root / "infra" / "kafka" / "dist" / "libs").glob("kafka_*.jar")):
        match = re.fullmatch(r"kafka_[\d.]+-([\d.]+)\.jar", jar.name)
        if match:
            return f"Kafka {match.group(1)}"
    try:
        match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>",
                          (root / "infra" / "kafka" / "pom.xml").read_text())
    except OSError:
        match = None
    return f"Kafka {match.group(1)}" if match else "Kafka version unknown"


def load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"
    except OSError:
        return "load unknown"


def describe() -> str:
    return ", ".join([cpu_model(), cores(), ram(), operating_system(),
                      f"Python {platform.python_version()}", kafka_version(), load()])


if __name__ == "__main__":
    print(describe())
