"""The skip logic of pipeline/runner.py with cheap fake stages (tiny Python commands writing a manifest)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from orpo_deploy.pipeline.runner import RUN_MARKER, StageFailed, StagePlan, StageRunner, claim_run_dir, fingerprint

# A fake stage: writes OUT/manifest.json with a fresh nonce (like a real stage's created_at), or fails.
WRITE = (
    "import json, os, sys, uuid; out = sys.argv[1]; os.makedirs(out, exist_ok=True); "
    "open(os.path.join(out, 'w.bin'), 'wb').write(b'weights'); "
    "json.dump({'nonce': uuid.uuid4().hex, 'weights_sha256': {'w.bin': "
    "__import__('hashlib').sha256(b'weights').hexdigest()}}, open(os.path.join(out, 'manifest.json'), 'w'))"
)
FAIL = "import sys; print('fake: error: the input is bad', file=sys.stderr); sys.exit(3)"


@pytest.fixture(autouse=True)
def run_folder(tmp_path):
    claim_run_dir(tmp_path)  # as orpo-pipeline does before its first stage


def fake_plan(root: Path, name: str, inputs: dict[str, str] | None = None, **settings) -> StagePlan:
    out = root / name
    return StagePlan(
        name=name,
        output=out,
        manifest="manifest.json",
        settings=settings,
        inputs=inputs or {},
        command=[sys.executable, "-c", WRITE, str(out)],
        check_weights=True,
    )


def chain(root: Path, **settings) -> list[StagePlan]:
    """Three fake stages a -> b -> c, each keyed on the manifest of the one before (as the pipeline does)."""
    a = fake_plan(root, "a", **settings)
    b = fake_plan(root, "b", {"a": fingerprint(a.manifest_path)})
    c = fake_plan(root, "c", {"b": fingerprint(b.manifest_path)})
    return [a, b, c]


def run_chain(root: Path, **settings) -> dict[str, str]:
    runner = StageRunner(root / "state", root / "logs", total=3, out=io.StringIO())
    statuses = {}
    # plans are built one at a time, after the stage before has finished, so keys see fresh manifests
    a = fake_plan(root, "a", **settings)
    statuses["a"] = runner.run(a).status
    b = fake_plan(root, "b", {"a": fingerprint(a.manifest_path)})
    statuses["b"] = runner.run(b).status
    c = fake_plan(root, "c", {"b": fingerprint(b.manifest_path)})
    statuses["c"] = runner.run(c).status
    return statuses


def test_second_run_skips_everything(tmp_path):
    assert run_chain(tmp_path) == {"a": "ran", "b": "ran", "c": "ran"}
    assert run_chain(tmp_path) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert (tmp_path / "logs" / "a.log").is_file()
    state = json.loads((tmp_path / "state" / "b.json").read_text())
    assert state["status"] == "done" and state["wall_s"] >= 0


def test_deleting_a_middle_output_reruns_it_and_what_follows(tmp_path):
    run_chain(tmp_path)
    before = (tmp_path / "a" / "manifest.json").read_text()
    import shutil

    shutil.rmtree(tmp_path / "b")
    assert run_chain(tmp_path) == {"a": "skipped", "b": "ran", "c": "ran"}
    assert (tmp_path / "a" / "manifest.json").read_text() == before


def test_changed_setting_reruns_the_stage_and_downstream(tmp_path):
    run_chain(tmp_path, lr=1)
    assert run_chain(tmp_path, lr=2) == {"a": "ran", "b": "ran", "c": "ran"}
    assert run_chain(tmp_path, lr=2) == {"a": "skipped", "b": "skipped", "c": "skipped"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda out: (out / "manifest.json").unlink(),
        lambda out: (out / "manifest.json").write_text("{not json"),
        lambda out: (out / "w.bin").write_bytes(b"corrupt"),
        lambda out: (out / "w.bin").unlink(),
    ],
    ids=["manifest-missing", "manifest-corrupt", "weights-corrupt", "weights-missing"],
)
def test_damaged_output_is_rebuilt(tmp_path, damage):
    run_chain(tmp_path)
    damage(tmp_path / "c")
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=1, out=io.StringIO())
    plans = chain(tmp_path)
    assert runner.stale_reason(plans[2]) is not None
    assert runner.stale_reason(plans[0]) is None
    assert run_chain(tmp_path) == {"a": "skipped", "b": "skipped", "c": "ran"}


def test_state_without_done_or_other_key_reruns(tmp_path):
    run_chain(tmp_path)
    state = tmp_path / "state" / "a.json"
    record = json.loads(state.read_text())
    state.write_text(json.dumps({**record, "status": "running"}))
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=1, out=io.StringIO())
    assert runner.stale_reason(chain(tmp_path)[0]) == "no finished output yet"
    state.write_text(json.dumps({**record, "key": "0" * 64}))
    assert runner.stale_reason(chain(tmp_path)[0]) == "settings or inputs changed"


def test_key_depends_on_settings_and_inputs_only():
    a = StagePlan("s", Path("/x"), "m.json", {"n": 1, "m": [1, 2]}, {"in": "abc"}, command=["true"])
    b = StagePlan("s", Path("/y"), "m.json", {"m": [1, 2], "n": 1}, {"in": "abc"}, command=["false"])
    assert a.key == b.key
    assert a.key != StagePlan("s", Path("/x"), "m.json", {"n": 2, "m": [1, 2]}, {"in": "abc"}).key
    assert a.key != StagePlan("s", Path("/x"), "m.json", {"n": 1, "m": [1, 2]}, {"in": "abd"}).key


def test_failed_stage_names_itself_and_its_log_and_keeps_finished_ones(tmp_path):
    out = io.StringIO()
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=2, out=out)
    a = fake_plan(tmp_path, "a")
    runner.run(a)
    bad = fake_plan(tmp_path, "b", {"a": fingerprint(a.manifest_path)})
    bad.command = [sys.executable, "-c", FAIL]
    with pytest.raises(StageFailed) as info:
        runner.run(bad)
    message = str(info.value)
    assert "stage b failed (exit 3)" in message and "the input is bad" in message
    assert str(tmp_path / "logs" / "b.log") in message
    assert not (tmp_path / "b").exists()
    assert StageRunner(tmp_path / "state", tmp_path / "logs", 1).stale_reason(fake_plan(tmp_path, "a")) is None


def test_staging_folder_is_renamed_and_soft_failures_count_as_done(tmp_path):
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=1, out=io.StringIO())
    out, staging = tmp_path / "lt", tmp_path / ".lt.partial"
    script = WRITE.replace("sys.argv[1]; ", "sys.argv[1]; ") + "; sys.exit(1)"
    plan = StagePlan("lt", out, "manifest.json", {}, {}, [sys.executable, "-c", script, str(staging)])
    plan.staging, plan.soft_fail_codes = staging, (1,)
    result = runner.run(plan)
    assert result.status == "ran" and result.exit_code == 1
    assert (out / "manifest.json").is_file() and not staging.exists()
    assert runner.stale_reason(plan) is None


def test_resume_args_only_for_an_interrupted_attempt_with_the_same_key(tmp_path):
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=1, out=io.StringIO())
    plan = fake_plan(tmp_path, "t")
    plan.resume_args = ["--resume"]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "checkpoint").write_text("half")
    runner.write_state("t", {"key": plan.key, "status": "running"})
    assert runner._prepare_output(plan) == ["--resume"]
    assert (tmp_path / "t" / "checkpoint").exists()
    runner.write_state("t", {"key": "other", "status": "running"})
    assert runner._prepare_output(plan) == []
    assert not (tmp_path / "t").exists()


def test_only_a_claimed_run_folder_is_ever_cleared(tmp_path):
    """A run name such as '..' pointed the runner at the project itself; now a folder holding files that are not
    a run folder is refused before any stage, and nothing outside a claimed folder is deleted."""
    project = tmp_path / "project"
    (project / "train").mkdir(parents=True)
    (project / "train" / "cli.py").write_text("source")
    with pytest.raises(StageFailed, match="not an orpo-pipeline run folder"):
        claim_run_dir(project)
    runner = StageRunner(project / "state", project / "logs", total=1, out=io.StringIO())
    with pytest.raises(StageFailed, match="refusing to delete"):
        runner.run(fake_plan(project, "train"))
    assert (project / "train" / "cli.py").read_text() == "source"
    fresh = tmp_path / "fresh"
    claim_run_dir(fresh)
    claim_run_dir(fresh)  # a claimed folder stays claimed
    assert (fresh / RUN_MARKER).is_file()


def test_pipeline_names_must_be_plain():
    from orpo_deploy.pipeline.config import CPU_CONFIG, ConfigError, load_config, parse_set

    for name in ("..", ".", "a/b", "x y", "../../src"):
        with pytest.raises(ConfigError, match="plain folder name"):
            load_config(CPU_CONFIG, overrides=parse_set([f"name={name}"]))


def test_sigterm_stops_the_running_stage_too(tmp_path):
    """orpo-pipeline's SIGTERM handler raises KeyboardInterrupt; the runner then stops the stage's process."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = f"""
import io, signal, sys
from pathlib import Path
from orpo_deploy.pipeline.cli import _terminated
from orpo_deploy.pipeline.runner import StagePlan, StageRunner, claim_run_dir
root = Path({str(tmp_path / "run")!r}); claim_run_dir(root)
signal.signal(signal.SIGTERM, _terminated)
plan = StagePlan(name="s", output=root / "s", manifest="m.json", settings={{}}, inputs={{}},
                 command=[sys.executable, "-c", {child!r}])
try:
    StageRunner(root / "state", root / "logs", total=1, out=io.StringIO()).run(plan)
except KeyboardInterrupt:
    sys.exit(130)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # reaped by the runner's wait: gone
            os.kill(child_pid, 0)
            time.sleep(0.1)


def test_a_changed_setting_keeps_the_earlier_output_aside(tmp_path):
    run_chain(tmp_path, lr=1)
    before = (tmp_path / "a" / "manifest.json").read_text()
    assert run_chain(tmp_path, lr=2)["a"] == "ran"
    (kept,) = (tmp_path / "previous").glob("a.*")
    assert (kept / "manifest.json").read_text() == before  # moved aside, not deleted
    assert (tmp_path / "a" / "manifest.json").read_text() != before


def test_a_long_stage_prints_progress(tmp_path):
    out = io.StringIO()
    runner = StageRunner(tmp_path / "state", tmp_path / "logs", total=1, out=out, progress_s=0.2)
    slow = "import time, sys; print('step 1 of 3', flush=True); time.sleep(0.7); " + WRITE
    plan = fake_plan(tmp_path, "slow")
    plan.command = [sys.executable, "-c", slow, str(tmp_path / "slow")]
    assert runner.run(plan).status == "ran"
    assert "s: step 1 of 3" in out.getvalue()
