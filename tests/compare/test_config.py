"""orpo-compare's config and CLI: validation, per-arm configs, one-line errors (no training here)."""

from pathlib import Path

import pytest

from orpo_deploy.compare.cli import main
from orpo_deploy.compare.config import NO_INTERMEDIATE_SAVES, CompareConfig
from orpo_deploy.train.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["compare_smollm2_cpu.yaml", "compare_tiny_test.yaml"])
def test_shipped_configs_load(name):
    path = REPO / "configs" / name
    assert path.read_text().splitlines()[0].startswith("# orpo-compare --config configs/")
    cfg = CompareConfig.from_sources(str(path))
    assert cfg.pairs >= 1 and cfg.eval_limit >= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pairs": 0}, "pairs must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"eval_limit": 0}, "eval_limit must be >= 1"),
        ({"eval_engine": "tgi"}, "eval_engine must be one of"),
        ({"dpo_learning_rate": 0}, "dpo_learning_rate must be > 0"),
        ({"orpo_beta": 0}, "orpo_beta must be > 0"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"pairs": "many"}, "pairs: expected an integer"),
        ({"max_length": 100, "max_prompt_length": 96}, "must leave at least"),  # TrainConfig's own check
        ({"output": "runs/x", "work_dir": "runs/x"}, "work_dir must differ"),
        ({"pairz": 3}, "unknown config key 'pairz' (did you mean pairs?)"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        CompareConfig.from_sources(overrides=overrides)
    assert message in str(info.value)


def test_arms_share_everything_but_the_objective(tmp_path):
    cfg = CompareConfig.from_sources(
        overrides={"orpo_learning_rate": 3e-4, "sft_learning_rate": 1e-4, "dpo_learning_rate": 2e-5, "pairs": 40}
    )
    arms = {s: cfg.arm_config(s, tmp_path / s).to_dict() for s in ("orpo", "sft", "dpo")}
    assert {s: a["learning_rate"] for s, a in arms.items()} == {"orpo": 3e-4, "sft": 1e-4, "dpo": 2e-5}
    shared = [k for k in arms["orpo"] if k not in ("learning_rate", "output_dir")]
    for key in shared:
        assert arms["orpo"][key] == arms["sft"][key] == arms["dpo"][key], key
    assert arms["orpo"]["max_pairs"] == 40 and arms["orpo"]["num_train_epochs"] == 1.0
    assert arms["orpo"]["save_steps"] == NO_INTERMEDIATE_SAVES
    assert cfg.arm_config("dpo", tmp_path, model=str(tmp_path / "sft")).model == str(tmp_path / "sft")
    with pytest.raises(ConfigError, match="unknown stage"):
        cfg.arm_config("kto", tmp_path)


def test_work_dir_defaults_beside_output():
    assert CompareConfig.from_sources(overrides={"output": "runs/c"}).work_path == Path("runs/c.work")


def test_cli_bad_key_is_one_line(capsys):
    assert main(["--set", "lora_rank=8", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'lora_rank'" in err


def test_cli_missing_config_file(capsys, tmp_path):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_prints_resolved_config(capsys):
    assert (
        main(["--config", str(REPO / "configs" / "compare_tiny_test.yaml"), "--set", "pairs=12", "--print-config"]) == 0
    )
    assert "pairs: 12" in capsys.readouterr().out


def test_cli_refuses_a_foreign_work_dir(capsys, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not orpo-compare's")
    code = main(["--set", "model=tiny-smollm2", "--set", f"output={tmp_path / 'out'}", "--set", f"work_dir={foreign}"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was not made by orpo-compare" in err
    assert (foreign / "keep.txt").is_file()


def test_cli_unknown_flag_is_one_line(capsys):
    assert main(["--pairs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo-compare: error: unrecognized arguments") and err.count("\n") == 0
