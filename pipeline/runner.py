"""Run one stage, or skip it when its output is up to date: the generic part of the pipeline.

A stage's *key* is the sha256 of its resolved settings and the fingerprints of its inputs (the sha256 of the
manifest of each folder it reads). When a stage finishes, ``state/<stage>.json`` records the key and the sha256 of
the manifest its output now carries. The stage is skipped when that record says "done" with the same key, the
output folder and its manifest are still there with the recorded sha256, and (for model folders) the weights still
match the manifest's ``weights_sha256``. A re-made output has a new manifest (its ``created_at`` at least), so every
stage that read it gets a new key and runs again: deleting one output re-runs that stage and those after it.
The keys cover settings and inputs, not the code: after changing a stage's code, pass ``--rerun STAGE``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import RunFailed
from orpo_deploy.core.io import write_json
from orpo_deploy.core.manifest import sha256_file, sha256_json

logger = logging.getLogger(__name__)


class StageFailed(RunFailed):
    """A stage that did not produce its output; the message names the stage and its log."""


@dataclass
class StagePlan:
    """What one stage does and what it depends on."""

    name: str
    output: Path
    """The folder the stage produces."""
    manifest: str
    """File inside ``output`` whose presence proves the stage finished; its sha256 is the output's fingerprint."""
    settings: dict[str, Any]
    inputs: dict[str, str]
    """Input name -> fingerprint (see ``fingerprint``)."""
    command: list[str] | None = None
    """argv run to completion; or ``execute`` for a stage that is not one command (the server)."""
    execute: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    resume_args: list[str] = field(default_factory=list)
    """Added to ``command`` when an interrupted attempt with the same key left its output (training checkpoints)."""
    staging: Path | None = None
    """Where ``command`` writes (a CLI that writes in place); renamed to ``output`` once it finished."""
    soft_fail_codes: tuple[int, ...] = ()
    """Exit codes that still count as finished when the manifest was written (a load test that missed an SLO)."""
    check_weights: bool = False
    """Also check the weight files beside the manifest against its ``weights_sha256``."""

    @property
    def key(self) -> str:
        return sha256_json({"stage": self.name, "settings": self.settings, "inputs": self.inputs})

    @property
    def manifest_path(self) -> Path:
        return self.output / self.manifest


@dataclass
class StageResult:
    name: str
    status: str  # "ran" or "skipped"
    wall_s: float
    reason: str
    log: Path | None = None
    exit_code: int | None = None


# The file that marks a folder as an orpo-pipeline run folder: the runner deletes stage outputs only inside one.
RUN_MARKER = ".orpo-pipeline-run"


def claim_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` a run folder, or refuse one that holds other files (a name such as '..' or a typo that points
    at a project folder must never let the runner delete what is there)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        return
    if any(run_dir.iterdir()):
        raise StageFailed(
            f"{run_dir.resolve()} already holds files and is not an orpo-pipeline run folder (no {RUN_MARKER}); "
            "choose another name or runs_dir"
        )
    marker.write_text("orpo-pipeline run folder: stage outputs in here may be deleted and rebuilt\n")


def fingerprint(manifest_path: Path) -> str:
    """sha256 of an output's manifest file, or a marker that it is missing (so a key can still be computed)."""
    return sha256_file(manifest_path) if manifest_path.is_file() else f"missing:{manifest_path}"


class StageRunner:
    """Runs plans in order, keeping ``state_dir/<stage>.json`` and ``log_dir/<stage>.log``; prints one line each."""

    def __init__(
        self, state_dir: Path, log_dir: Path, total: int, echo: bool = False, out=None, progress_s: float = 60.0
    ) -> None:
        self.state_dir, self.log_dir = Path(state_dir), Path(log_dir)
        self.total, self.echo, self.progress_s = total, echo, progress_s
        self.out = out or sys.stdout
        self.results: list[StageResult] = []

    def state_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def read_state(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path(name).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_state(self, name: str, state: dict[str, Any]) -> None:
        write_json(self.state_path(name), state, sort_keys=True)

    def stale_reason(self, plan: StagePlan) -> str | None:
        """Why ``plan`` must run, or None when its output is up to date."""
        state = self.read_state(plan.name)
        if state is None or state.get("status") != "done":
            return "no finished output yet"
        if state.get("key") != plan.key:
            return "settings or inputs changed"
        if not plan.output.is_dir():
            return "output missing"
        if not plan.manifest_path.is_file():
            return f"{plan.manifest} missing"
        if sha256_file(plan.manifest_path) != state.get("manifest_sha256"):
            return f"{plan.manifest} changed"
        if plan.check_weights:
            return weights_mismatch(plan.manifest_path.parent, plan.manifest_path)
        return None

    def run(self, plan: StagePlan, force: str | None = None) -> StageResult:
        """Run ``plan`` unless it is up to date (``force``: a reason to run it anyway); raises StageFailed."""
        index = len(self.results) + 1
        reason = force or self.stale_reason(plan)
        if reason is None:
            result = StageResult(plan.name, "skipped", 0.0, "up to date")
            self._say(f"[{index}/{self.total}] {plan.name:<10} skipped (up to date)")
            self.results.append(result)
            return result
        log = self.log_dir / f"{plan.name}.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._say(f"[{index}/{self.total}] {plan.name:<10} running ({reason}); log: {log}", end="")
        extra = self._prepare_output(plan)
        self.write_state(plan.name, {"key": plan.key, "status": "running", "started_at": _now()})
        started = time.perf_counter()
        code = 0
        try:
            if plan.execute is not None:
                plan.execute(log)
            else:
                code = self._run_command([*plan.command, *extra], plan.env, log)
        except StageFailed:
            self._say(f" -> FAILED after {time.perf_counter() - started:.0f} s")
            raise
        wall = time.perf_counter() - started
        finished = plan.manifest_path if plan.staging is None else plan.staging / plan.manifest
        if code != 0 and not (code in plan.soft_fail_codes and finished.is_file()):
            self._say(f" -> FAILED after {wall:.0f} s")
            raise StageFailed(f"stage {plan.name} failed (exit {code}): {_last_line(log)}; full log: {log}")
        if plan.staging is not None:
            if plan.output.exists():
                remove_output(plan.output)
            os.replace(plan.staging, plan.output)
        if not plan.manifest_path.is_file():
            self._say(f" -> FAILED after {wall:.0f} s")
            raise StageFailed(f"stage {plan.name} finished without writing {plan.manifest_path}; full log: {log}")
        self.write_state(
            plan.name,
            {
                "key": plan.key,
                "status": "done",
                "manifest_sha256": sha256_file(plan.manifest_path),
                "wall_s": round(wall, 2),
                "exit_code": code,
                "finished_at": _now(),
                "settings": plan.settings,
                "inputs": plan.inputs,
            },
        )
        self._say(f" -> done in {wall:.1f} s" + (f" (exit {code})" if code else ""))
        result = StageResult(plan.name, "ran", wall, reason, log, code)
        self.results.append(result)
        return result

    def _prepare_output(self, plan: StagePlan) -> list[str]:
        """Clear a stale output (or keep it for ``resume_args``); returns the extra arguments."""
        state = self.read_state(plan.name)
        interrupted = state is not None and state.get("status") == "running" and state.get("key") == plan.key
        if plan.resume_args and interrupted and plan.output.is_dir():
            logger.info("%s: resuming the interrupted attempt in %s", plan.name, plan.output)
            return list(plan.resume_args)
        finished = state is not None and state.get("status") == "done" and state.get("key") != plan.key
        if finished and plan.output.is_dir():  # a finished output made with other settings or inputs: kept aside
            kept = keep_aside(plan.output, state.get("finished_at"))
            self._say(f"      {plan.name:<10} earlier output (other settings) kept in {kept}")
        for path in (plan.output, plan.staging):
            if path is not None and path.exists():
                remove_output(path)
        return []

    def _run_command(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        last = [b""]
        done = threading.Event()

        def progress() -> None:  # a long stage is not silent: elapsed time and its latest log line, now and then
            started = time.monotonic()
            while not done.wait(self.progress_s):
                line = last[0].decode(errors="replace").strip().replace("\r", " ")[-100:]
                self._say(f"\n      ... {time.monotonic() - started:.0f} s: {line}", end="")

        with open(log, "ab") as f:
            f.write(f"\n===== {_now()} $ {' '.join(argv)}\n".encode())
            f.flush()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env})
            assert proc.stdout is not None
            ticker = threading.Thread(target=progress, daemon=True)
            if not self.echo and self.progress_s:
                ticker.start()
            try:
                for line in proc.stdout:  # streamed, so a long stage's log can be followed with tail -f
                    f.write(line)
                    f.flush()
                    if line.strip():
                        last[0] = line.rsplit(b"\r", 1)[-1] or line  # progress bars redraw with \r
                    if self.echo:
                        self.out.write(line.decode(errors="replace"))
                return proc.wait()
            except BaseException:  # SIGTERM/Ctrl-C of the pipeline: the stage goes too (it resumes on the next run)
                stop_process(proc)
                raise
            finally:
                done.set()

    def _say(self, text: str, end: str = "\n") -> None:
        if self.echo and end == "":
            end = "\n"
        self.out.write(text + end)
        self.out.flush()


PREVIOUS = "previous"  # run_dir/previous/<stage>.<finished_at>: outputs a changed setting replaced


def keep_aside(path: Path, finished_at: str | None) -> Path:
    """Move a finished stage output to ``run_dir/previous/`` (same file system: a rename), not delete it."""
    if not (path.parent / RUN_MARKER).is_file():
        raise StageFailed(f"refusing to move {path}: its folder is not an orpo-pipeline run folder")
    stamp = (finished_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).replace(":", "")
    target = path.parent / PREVIOUS / f"{path.name}.{stamp}"
    target.parent.mkdir(exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{os.getpid()}")
    os.replace(path, target)
    return target


def remove_output(path: Path) -> None:
    """Delete a stage output, only inside a run folder this runner claimed (``claim_run_dir``)."""
    if not (path.parent / RUN_MARKER).is_file():
        raise StageFailed(f"refusing to delete {path}: its folder is not an orpo-pipeline run folder")
    shutil.rmtree(path)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def weights_mismatch(folder: Path, manifest_path: Path) -> str | None:
    """A reason when a weight file named in the manifest is missing or differs from its recorded sha256."""
    try:
        recorded = json.loads(manifest_path.read_text()).get("weights_sha256") or {}
    except (OSError, json.JSONDecodeError):
        return "manifest unreadable"
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"weights {name} missing"
        if sha256_file(path) != digest:
            return f"weights {name} differ from the manifest"
    return None


def _last_line(log: Path) -> str:
    """The stage's own last words: its last non-empty log line (the CLIs end with one 'error:' line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "error:" in ln or "failed:" in ln or "Error" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
