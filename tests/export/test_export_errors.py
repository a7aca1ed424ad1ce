"""orpo-export's input errors: one line on stderr, exit 2, no output folder; all caught before quantising."""

from __future__ import annotations

import json
import shutil

import pytest

from orpo_deploy.export.cli import main as export_main

TINY = "tiny-smollm2"


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = export_main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    # torch/torchao may log import warnings of their own on stderr; ours is exactly one line, the last
    ours = [line for line in err.splitlines() if line.startswith("orpo-export:")]
    assert len(ours) == 1 and ours[0] == err.splitlines()[-1] and ours[0].startswith("orpo-export: error: "), err
    for needle in needles:
        assert needle in ours[0], ours[0]


@pytest.fixture
def out(tmp_path):
    return tmp_path / "quantised"


def test_unsupported_bits(out, capsys):
    code, err = run(["--model", TINY, "--method", "gptq", "--bits", "3", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "--bits 3", "not supported")
    assert not out.exists()


@pytest.mark.parametrize("size", ["0", "-4"])
def test_calibration_size_below_one(out, capsys, size):
    code, err = run(["--model", TINY, "--method", "awq", "--calibration-size", size, "--output", str(out)], capsys)
    assert_one_line_error(code, err, "--calibration-size")
    assert not out.exists()


def test_unknown_method_and_missing_output(out, capsys):
    assert_one_line_error(*run(["--model", TINY, "--method", "hqq", "--output", str(out)], capsys), "--method")
    assert_one_line_error(*run(["--model", TINY, "--method", "gptq"], capsys), "--output")


def test_not_a_model_folder(tmp_path, out, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "weights.txt").write_text("nothing here")
    code, err = run(["--model", str(empty), "--method", "gptq", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "not a HF model folder")
    assert not out.exists()


def test_already_quantised_input(tiny_model_dir, tmp_path, out, capsys):
    quantised = tmp_path / "already-gptq"
    shutil.copytree(tiny_model_dir, quantised)
    config = json.loads((quantised / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (quantised / "config.json").write_text(json.dumps(config))
    code, err = run(["--model", str(quantised), "--method", "gptq", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "already quantised", "gptq")
    assert not out.exists()


def test_group_size_that_does_not_divide_the_layer_widths(tiny_model_dir, out, capsys):
    # the tiny model's linear layers take 128 (hidden) or 256 (intermediate) inputs: 96 divides neither
    code, err = run(
        ["--model", str(tiny_model_dir), "--method", "gptq", "--group-size", "96", "--output", str(out)], capsys
    )
    assert_one_line_error(code, err, "--group-size 96", "does not divide", "128")
    assert not out.exists()


def test_odd_group_size_refused(out, capsys):
    code, err = run(["--model", TINY, "--method", "gptq", "--group-size", "33", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "even group size")


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_no_calibration_data(tiny_model_dir, tmp_path, out, capsys, content):
    data = tmp_path / "empty.jsonl"
    data.write_text(content)
    argv = ["--model", str(tiny_model_dir), "--method", "gptq", "--calibration-dataset", str(data)]
    code, err = run(argv + ["--output", str(out)], capsys)
    assert_one_line_error(code, err, "calibration data", "no rows")
    assert not out.exists()


def test_missing_calibration_file(tiny_model_dir, tmp_path, out, capsys):
    argv = ["--model", str(tiny_model_dir), "--method", "awq", "--calibration-dataset", str(tmp_path / "nope.jsonl")]
    code, err = run(argv + ["--output", str(out)], capsys)
    assert_one_line_error(code, err, "calibration data", "no such file")


def test_existing_output_folder_is_kept(tiny_model_dir, out, capsys):
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run(["--model", str(tiny_model_dir), "--method", "gptq", "--output", str(out)], capsys)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"


def test_yaml_config_unknown_key_and_precedence(tmp_path, out, capsys):
    from orpo_deploy.export.cli import parse_config

    cfg_file = tmp_path / "export.yaml"
    cfg_file.write_text("model: tiny-smollm2\nmethod: awq\ngroup_size: 64\nmin_retention: 0.5\n")
    cfg = parse_config(["--config", str(cfg_file), "--group-size", "32", "--output", str(out)])
    assert (cfg.method, cfg.group_size, cfg.min_retention, cfg.output) == ("awq", 32, 0.5, str(out))
    cfg_file.write_text("model: tiny-smollm2\ngroup_sise: 64\n")
    assert_one_line_error(*run(["--config", str(cfg_file), "--output", str(out)], capsys), "did you mean 'group_size'")
