"""orpo-train's choice of malloc (train/allocator.py): glibc by default, jemalloc preloaded on request."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orpo_deploy.train.allocator import (
    ENV_VAR,
    JEMALLOC_CONF,
    AllocatorError,
    find_jemalloc,
    jemalloc_env,
    wanted_library,
)

REPO = Path(__file__).resolve().parents[2]


def fake_prefix(tmp_path: Path) -> Path:
    library = tmp_path / "lib" / "jemalloc" / "libjemalloc.so.2"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"")
    return library


def test_the_virtualenv_copy_comes_first(tmp_path):
    library = fake_prefix(tmp_path)
    assert find_jemalloc(str(tmp_path)) == library
    assert wanted_library({ENV_VAR: "jemalloc"}, str(tmp_path)) == library


def test_glibc_by_default_and_no_second_preload(tmp_path):
    fake_prefix(tmp_path)
    assert wanted_library({}, str(tmp_path)) is None
    assert wanted_library({ENV_VAR: "glibc"}, str(tmp_path)) is None
    # the re-executed process: jemalloc already preloaded, so no exec loop
    assert wanted_library({ENV_VAR: "jemalloc", "LD_PRELOAD": "/opt/libjemalloc.so.2"}, str(tmp_path)) is None


def test_asking_for_a_missing_jemalloc_is_an_error(tmp_path, monkeypatch):
    import orpo_deploy.train.allocator as allocator

    monkeypatch.setattr(allocator, "_SYSTEM_DIRS", ())
    with pytest.raises(AllocatorError, match="libjemalloc.so.2 is not installed"):
        wanted_library({ENV_VAR: "jemalloc"}, str(tmp_path))


def test_jemalloc_env_keeps_what_the_user_set():
    env = jemalloc_env({"LD_PRELOAD": "/x/libfoo.so", "PATH": "/bin"}, Path("/j/libjemalloc.so.2"))
    assert env["LD_PRELOAD"] == "/j/libjemalloc.so.2 /x/libfoo.so" and env["PATH"] == "/bin"
    assert env["MALLOC_CONF"] == JEMALLOC_CONF and env[ENV_VAR] == "jemalloc"
    assert jemalloc_env({"MALLOC_CONF": "narenas:2"}, Path("/j.so"))["MALLOC_CONF"] == "narenas:2"


@pytest.mark.skipif(find_jemalloc() is None, reason="jemalloc not installed (scripts/setup_env.sh could not fetch it)")
@pytest.mark.parametrize("choice", ["jemalloc", "glibc"])
def test_a_command_re_executes_under_jemalloc(tmp_path, choice):
    """The real library, a real exec: the process that prints has jemalloc mapped, or not when glibc is asked for."""
    (tmp_path / "probe_cmd.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            from orpo_deploy.train.allocator import active_allocator, reexec_under_jemalloc
            reexec_under_jemalloc("probe_cmd", sys.argv[1:])
            print(active_allocator(), os.environ.get("MALLOC_CONF"), *sys.argv[1:])
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env.update({ENV_VAR: choice, "PYTHONPATH": str(tmp_path)})
    out = subprocess.run(
        [sys.executable, "-m", "probe_cmd", "--flag", "x y"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    expected = f"jemalloc {JEMALLOC_CONF}" if choice == "jemalloc" else "glibc None"
    assert out.stdout.strip() == f"{expected} --flag x y"  # arguments survive the exec


def test_orpo_train_refuses_an_unknown_allocator():
    env = {**os.environ, ENV_VAR: "tcmalloc"}
    out = subprocess.run(
        [sys.executable, "-m", "orpo_deploy.train.cli", "--print-config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        out.returncode == 2
        and out.stderr.strip() == f"orpo-train: error: {ENV_VAR} must be glibc or jemalloc, got 'tcmalloc'"
    )
