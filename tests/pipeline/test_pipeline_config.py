"""pipeline/config.py and the CLI's one-line errors."""

from __future__ import annotations

import pytest

from orpo_deploy.pipeline.cli import main
from orpo_deploy.pipeline.config import CPU_CONFIG, GPU_CONFIG, ConfigError, load_config, parse_set
from orpo_deploy.pipeline.stages import choose_served_model


def test_shipped_configs_load_with_and_without_quick():
    for path in (CPU_CONFIG, GPU_CONFIG):
        full, quick = load_config(path), load_config(path, quick=True)
        assert quick.name != full.name  # a quick look never overwrites the full run
        assert quick.train.max_steps < full.train.max_steps
        assert quick.train.config == full.train.config


def test_overrides_reach_nested_keys_and_keep_siblings():
    cfg = load_config(CPU_CONFIG, overrides=parse_set(["eval.limit=4", "loadtest.slos.ttft_p95_ms=100"]))
    assert cfg.eval.limit == 4 and cfg.eval.max_new_tokens == load_config(CPU_CONFIG).eval.max_new_tokens
    assert cfg.loadtest.slos["ttft_p95_ms"] == 100 and "error_rate" in cfg.loadtest.slos


def test_numbers_are_read_as_every_command_reads_them():
    # YAML 1.1 reads '9e-1' (no dot) as a string: the shared engine (core/config.py) reads it as orpo-train does
    cfg = load_config(CPU_CONFIG, overrides=parse_set(["export.min_retention=9e-1", "serve.grace_seconds=5"]))
    assert cfg.export.min_retention == 0.9 and isinstance(cfg.serve.grace_seconds, float)


@pytest.mark.parametrize(
    "item, match",
    [
        ("eval.limt=4", "did you mean eval.limit"),
        ("eval.limit=zero", "eval.limit: expected an integer"),
        ("serve.serve=awq", "serve.serve must be one of"),
        ("train.config=nope.yaml", "train.config not found"),
        ("limit", "--set expects KEY=VALUE"),
    ],
)
def test_bad_values_name_the_key(item, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CPU_CONFIG, overrides=parse_set([item]))


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    assert main(["--config", str(CPU_CONFIG), "--set", "eval.limt=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo-pipeline: error:") and "\n" not in err
    assert main(["--config", "missing.yaml"]) == 2


def test_serving_choice_falls_back_to_merged_without_4bit_kernels():
    cfg = load_config(CPU_CONFIG)
    which, folder, reason = choose_served_model(cfg, False, "CPU without AVX-512")
    assert which == "merged" and folder.name == "merged" and "AVX-512" in reason
    assert choose_served_model(cfg, True, "CUDA")[0] == "quantized"
    cfg.serve.serve = "merged"
    assert choose_served_model(cfg, True, "CUDA")[0] == "merged"


def test_export_group_size_reaches_orpo_export_only_when_set():
    from orpo_deploy.pipeline.stages import plan_export

    def argv(cfg) -> list[str]:
        return [str(a) for a in plan_export(cfg).command]

    shipped = argv(load_config(CPU_CONFIG))
    assert shipped[shipped.index("--group-size") + 1] == "32"
    auto = argv(load_config(CPU_CONFIG, overrides=parse_set(["export.group_size=null"])))
    assert "--group-size" not in auto


def test_onpolicy_pairs_stage_feeds_training_and_calibration(tmp_path):
    from orpo_deploy.pipeline.stages import PAIRS, TRAIN, output_dir, plan_export, plan_pairs, plan_train, stages

    committed = load_config(CPU_CONFIG)
    assert PAIRS not in stages(committed) and TRAIN in stages(committed)
    cfg = load_config(CPU_CONFIG, overrides=parse_set(["pairs.source=onpolicy", "pairs.k=6", f"runs_dir={tmp_path}"]))
    assert stages(cfg)[:2] == (PAIRS, TRAIN)
    pairs = [str(a) for a in plan_pairs(cfg, tmp_path).command]
    assert pairs[pairs.index("-m") + 1 : pairs.index("-m") + 3] == ["orpo_deploy.data.cli", "generate"]
    assert pairs[pairs.index("--k") + 1] == "6" and pairs[pairs.index("--split") + 1] == "train"
    pairs_file = str(output_dir(cfg, PAIRS) / "pairs.jsonl")
    assert f"dataset={pairs_file}" in [str(a) for a in plan_train(cfg, tmp_path).command]
    export = [str(a) for a in plan_export(cfg).command]
    assert export[export.index("--calibration-dataset") + 1] == pairs_file
    # the train stage is keyed on the pairs stage's output, so new pairs retrain
    assert plan_train(cfg, tmp_path).inputs["dataset"].startswith("missing:")
    with pytest.raises(ConfigError, match="leave dataset empty"):
        load_config(CPU_CONFIG, overrides=parse_set(["pairs.source=onpolicy", "dataset=x.jsonl"]))
    with pytest.raises(ConfigError, match="pairs.source must be one of"):
        load_config(CPU_CONFIG, overrides=parse_set(["pairs.source=model"]))


def test_rounds_chain_pairs_train_and_dev_from_the_previous_round(tmp_path):
    from orpo_deploy.pipeline.stages import merged_dir, plan_dev, plan_export, plan_pairs, plan_train, stages

    cfg = load_config(
        CPU_CONFIG, overrides=parse_set(["pairs.source=onpolicy", "pairs.rounds=2", f"runs_dir={tmp_path}"])
    )
    assert stages(cfg)[:6] == ("pairs", "train", "dev", "pairs-2", "train-2", "dev-2")
    base = tmp_path / "base"
    round2_pairs = [str(a) for a in plan_pairs(cfg, base, 2).command]
    assert round2_pairs[round2_pairs.index("--model") + 1] == str(merged_dir(cfg, 1))  # samples the new model
    round2 = [str(a) for a in plan_train(cfg, base, 2).command]
    assert f"model={merged_dir(cfg, 1)}" in round2  # and trains on from it
    assert any(a.endswith("pairs-2/pairs.jsonl") for a in round2)
    assert merged_dir(cfg) == merged_dir(cfg, 2)  # the last round goes on to eval, export and serving
    export = [str(a) for a in plan_export(cfg).command]
    assert export[export.index("--model") + 1] == str(merged_dir(cfg, 2))
    dev = [str(a) for a in plan_dev(cfg, 2).command]
    assert dev[dev.index("--dataset") + 1] == "dev" and dev[dev.index("--model") + 1] == str(merged_dir(cfg, 2))
    with pytest.raises(ConfigError, match="pairs.rounds"):
        load_config(CPU_CONFIG, overrides=parse_set(["pairs.rounds=2"]))  # rounds need on-policy pairs


def test_print_config_prints_the_resolved_yaml_and_refuses_bad_keys(capsys):
    import yaml

    assert main(["--config", str(CPU_CONFIG), "--set", "eval.limit=7", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["eval"]["limit"] == 7 and printed["name"] == load_config(CPU_CONFIG).name
    assert main(["--config", str(CPU_CONFIG), "--set", "eval.limt=7", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo-pipeline: error:") and "eval.limit" in err and "\n" not in err
