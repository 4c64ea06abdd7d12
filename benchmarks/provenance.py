"""What every benchmark writes beside its figures: the CPU, the commit (``python benchmarks/NAME.py`` imports it)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        return re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


def commit() -> str:
    """HEAD's hash, marked when tracked files have uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.9, 2.3, 4.0"``."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def system() -> str:
    """Operating system and Python, e.g. ``"Linux 6.1, Python 3.11.7"``."""
    return f"{platform.system()} {platform.release()}, Python {platform.python_version()}"


def replace_block(results: Path, start: str, end: str, block: str) -> None:
    """Put ``block`` (which begins with ``start`` and ends with ``end``) in place of that block in ``results``,
    or append it; everything else in the file stays as it is."""
    text = results.read_text(encoding="utf-8") if results.is_file() else "# Benchmarks\n"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results.write_text(text, encoding="utf-8")
