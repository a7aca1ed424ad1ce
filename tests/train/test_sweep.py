"""orpo-sweep: a grid of real (tiny) orpo-train processes, chosen on dev; resumable; bad grids refused in one line."""

import json
import subprocess
import sys

import pytest

from orpo_deploy.train.config import ConfigError
from orpo_deploy.train.sweep import main, parse_grid, plan


def test_grid_parsing_and_validation(tmp_path):
    grid = parse_grid(["beta=0.5,1,2", "learning_rate=5e-4"])
    assert grid == {"beta": [0.5, 1, 2], "learning_rate": ["5e-4"]}  # YAML 1.1; the config coerces it
    assert plan(None, {"eval_dataset": "dev"}, grid, tmp_path)[0]["config"].learning_rate == 5e-4
    with pytest.raises(ConfigError, match="did you mean beta"):
        parse_grid(["betta=1"])
    with pytest.raises(ConfigError, match="cannot vary output_dir"):
        parse_grid(["output_dir=a,b"])
    with pytest.raises(ConfigError, match="beta"):  # a bad value fails before any run starts
        plan(None, {"eval_dataset": "dev"}, {"beta": [1.0, -1.0]}, tmp_path)
    with pytest.raises(ConfigError, match="chooses on dev"):
        plan(None, {"eval_dataset": "test"}, {"beta": [1.0]}, tmp_path)
    runs = plan(None, {"eval_dataset": "dev"}, {"beta": [0.5, 1.0], "max_steps": [10]}, tmp_path)
    assert [r["name"] for r in runs] == ["beta0.5_max_steps10", "beta1.0_max_steps10"]
    assert runs[1]["config"].output_dir == str(tmp_path / "runs" / "beta1.0_max_steps10")


def test_cli_bad_grid_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "orpo_deploy.train.sweep", "--grid", "beta"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "KEY=V1,V2" in proc.stderr


def test_tiny_sweep_runs_each_point_in_its_own_process_and_resumes(tmp_path, caplog):
    args = [
        "--config", "configs/orpo_tiny_test.yaml", "--grid", "beta=0.1,1.0", "--set", "max_steps=2",
        "--set", "max_pairs=16", "--set", "eval_steps=1", "--set", "save_steps=1", "--set", "eval_generate=2",
        "--set", "eval_max_new_tokens=4", "--set", "best_metric=if_mean", "--no-score", "--output-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["beta0.1", "beta1.0"]
    for r in summary["runs"]:
        assert r["trained"] and r["steps_run"] == 2 and [c["step"] for c in r["curve"]] == [1, 2]
        assert r["best"]["metric"] == "eval_if_mean" and r["dev"] is None
    assert (tmp_path / "runs" / "beta1.0" / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "sweep.png").stat().st_size > 5_000
    assert "| beta0.1 | 0.1 | 2 |" in (tmp_path / "sweep.md").read_text()
    caplog.set_level("INFO")
    assert main(args) == 0  # finished runs are skipped, not retrained
    assert sum("already trained, skipped" in m for m in caplog.messages) == 2
