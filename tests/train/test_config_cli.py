"""train.config / train.cli: precedence, checks, and one-line errors with exit code 2 (no training here)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orpo_deploy.train.cli import main, parse_config
from orpo_deploy.train.config import DIFFERS_FROM_TRL, ConfigError, TrainConfig, field_help

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_valid_and_documented():
    cfg = TrainConfig()
    assert cfg.learning_rate == 2e-4 and cfg.beta == 0.1 and cfg.lora_target_modules == "all-linear"
    assert cfg.orpo_forward == "lean" and cfg.logit_chunk_size == 512
    assert all(text.strip() for text in field_help().values())
    assert {name for name, *_ in DIFFERS_FROM_TRL} >= {"learning_rate", "bf16", "disable_dropout"}


def test_precedence_yaml_env_set_flag(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"learning_rate": 1e-4, "lora_r": 4, "beta": 0.2, "seed": 1}))
    monkeypatch.setenv("ORPO_TRAIN_LORA_R", "8")
    monkeypatch.setenv("ORPO_TRAIN_BETA", "0.3")
    cfg, _ = parse_config(["--config", str(path), "--set", "beta=0.4", "--set", "seed=7", "--seed", "9"])
    assert cfg.learning_rate == 1e-4  # yaml
    assert cfg.lora_r == 8  # env beats yaml
    assert cfg.beta == 0.4  # --set beats env
    assert cfg.seed == 9  # a flag beats --set


def test_values_are_coerced_from_strings():
    cfg, _ = parse_config(["--learning-rate", "3e-4", "--lora-target-modules", "[q_proj, v_proj]", "--max-pairs", ""])
    assert cfg.learning_rate == 3e-4 and cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.max_pairs is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -1e-4}, "learning_rate must be > 0"),
        ({"beta": -0.1}, "beta (ORPO lambda) must be >= 0"),
        ({"lora_r": 0}, "lora_r must be >= 1"),
        ({"lora_r": 2.5}, "lora_r: expected an integer"),
        ({"learning_rate": "fast"}, "learning_rate: expected a number"),
        ({"dataset": "/nonexistent/pairs.jsonl"}, "dataset file not found"),
        ({"max_prompt_length": 510}, "must leave at least 16 response tokens"),
        ({"disable_dropout": True}, "would silently zero lora_dropout"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"orpo_forward": "fast"}, "orpo_forward must be one of lean, trl"),
        ({"logit_chunk_size": 0}, "logit_chunk_size must be >= 1"),
        ({"lr": 1e-4}, "unknown config key 'lr'"),
        ({"eval_generate": 8}, "eval_generate needs an eval_dataset"),
        ({"report_to": "neptune"}, "report_to must be one of none, tensorboard"),
        ({"eval_dataset": "dev", "best_metric": "if_mean"}, "measured only with eval_generate > 0"),
        ({"eval_dataset": "dev", "best_metric": "loss", "save_steps": 30, "eval_steps": 20}, "must be a multiple"),
        ({"eval_dataset": "dev", "early_stopping_patience": 2}, "needs a best_metric to watch"),
        ({"eval_dataset": "dev", "eval_generate": -1}, "eval_generate must be >= 0"),
    ],
)
def test_bad_values_raise_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_sources(overrides=overrides, environ={})


@pytest.mark.parametrize(
    "argv",
    [
        ["--learning-rate", "-1"],
        ["--set", "lora_r=0"],
        ["--set", "nonsense"],
        ["--dataset", "/nonexistent.jsonl"],
        ["--no-such-flag"],
        ["--config", "/nonexistent.yaml"],
    ],
)
def test_cli_bad_config_exits_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("orpo-train: error: ") and err.count("\n") == 1, err


def test_cli_subprocess_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: -0.001\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orpo_deploy.train.cli", "--config", str(bad)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "orpo-train: error: learning_rate must be > 0, got -0.001"


@pytest.mark.parametrize("name", ["orpo_smollm2_cpu.yaml", "orpo_tiny_test.yaml"])
def test_example_configs_parse_and_start_with_their_command(name):
    path = REPO / "configs" / name
    assert path.read_text().splitlines()[0].startswith("# orpo-train --config configs/")
    cfg = TrainConfig.from_sources(path, environ={})
    assert cfg.output_dir


def test_cli_bad_dataset_row_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}\n{"prompt": "Hi", "chosen": "Hello"}\n')
    argv = ["--model", "tiny-smollm2", "--dataset", str(bad), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("orpo-train: error: ") and "row 2" in err and "'rejected'" in err and err.count("\n") == 1
