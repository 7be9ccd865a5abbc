"""Where a result came from: code version, packages, device."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("fednlp-bench", "torch", "transformers", "datasets", "numpy", "scikit-learn", "tokenizers")


def git_state() -> tuple[str | None, bool]:
    """(commit, dirty) of the checkout holding this package, or (None, False) outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())[:80] or platform.machine()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """The device, as precisely as float results depend on it: on CPU the model, the vector
    instruction set torch's kernels use (``AVX2``, ``AVX512``...) and the thread count, since a
    different CPU can round differently (docs/leaderboard.md, "Tolerance")."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_model()} {torch.backends.cpu.get_cpu_capability()} x{torch.get_num_threads()} threads"


def collect(device: torch.device) -> dict:
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": package_versions(),
        "device": device_description(device),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv[:],
    }
