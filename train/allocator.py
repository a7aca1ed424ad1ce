"""orpo-train under jemalloc, on request: glibc's malloc keeps much of what a checkpointed step frees (no torch here).

PyTorch's CPU tensors come straight from ``malloc``. Under glibc, a checkpointed ORPO step on SmolLM2 (batch 4 x 256
tokens, 2 cores) grew the process by 50-140 MB per decoder layer in the forward pass while its live tensors grew by
5 MB (measured with ``MALLOC_MMAP_THRESHOLD_``, which maps every large tensor on its own): freed blocks between
still-live ones are not reused for the next layer's, so peak RSS read 3.8-5.6 GB over runs for 1.7 GB live. jemalloc
reuses them: 1.79 GB at the same speed (11.0 vs 11.4 s/step). Its page purging is off (``dirty_decay_ms:-1``): with
the default 10 s decay the step took 15.4 s, re-faulting the pages it had returned. PyTorch's own CPU launcher
(``torch.backends.xeon.run_cpu``) preloads jemalloc or tcmalloc for the same reason.

Opt-in (``ORPO_DEPLOY_MALLOC=jemalloc``), because it is not a win everywhere: the default pipeline's training (40
steps of batch 8, no checkpointing, real data of varying lengths) peaked at 11.2 GB under jemalloc (8.6 GB under
glibc in the previous session's run; 6 steps of it, same code: 5.9 vs 5.5 GB): with purging off, blocks freed at one
step's shapes stay mapped when later steps ask for other sizes.
``LD_PRELOAD`` only acts when a process starts, so :func:`reexec_under_jemalloc` re-executes the current command once
with it set. ``scripts/setup_env.sh`` puts the library at ``.venv/lib/jemalloc/`` (Debian's ``libjemalloc2``); a
system copy is used too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from orpo_deploy.core.errors import UsageError

ENV_VAR = "ORPO_DEPLOY_MALLOC"  # glibc (default): leave malloc alone; jemalloc: preload it
CHOICES = ("glibc", "jemalloc")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
_NAME = "libjemalloc.so.2"
_SYSTEM_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_jemalloc(prefix: str = sys.prefix) -> Path | None:
    """The jemalloc shared library: the virtualenv's copy first, then the system's."""
    for folder in (Path(prefix) / "lib" / "jemalloc", *map(Path, _SYSTEM_DIRS)):
        if (folder / _NAME).is_file():
            return folder / _NAME
    return None


def jemalloc_env(env: Mapping[str, str], library: Path) -> dict[str, str]:
    """``env`` plus jemalloc preloaded (before anything already in LD_PRELOAD) and its purging off."""
    preload = " ".join(p for p in (str(library), env.get("LD_PRELOAD", "")) if p)
    conf = env.get("MALLOC_CONF")  # a user's own setting wins
    return {**env, "LD_PRELOAD": preload, "MALLOC_CONF": conf or JEMALLOC_CONF, ENV_VAR: "jemalloc"}


class AllocatorError(UsageError):
    """jemalloc was asked for and is not installed."""


def wanted_library(env: Mapping[str, str], prefix: str = sys.prefix) -> Path | None:
    """The library to preload, or None when glibc is asked for or jemalloc is already in place."""
    if env.get(ENV_VAR, "glibc") != "jemalloc" or "jemalloc" in env.get("LD_PRELOAD", ""):
        return None
    library = find_jemalloc(prefix)
    if library is None:
        raise AllocatorError(f"{ENV_VAR}=jemalloc but {_NAME} is not installed (scripts/setup_env.sh fetches it)")
    return library


def reexec_under_jemalloc(module: str, argv: list[str]) -> None:
    """Replace this process with ``python -m module argv`` under jemalloc, if wanted; otherwise return."""
    library = wanted_library(os.environ)
    if library is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv], jemalloc_env(os.environ, library))


def active_allocator() -> str:
    """'jemalloc' when it is mapped into this process, else 'glibc' (for the log)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "glibc"
