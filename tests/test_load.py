import json

import pytest

from orpo_deploy.data.load import DatasetError, load_preference_dataset
from orpo_deploy.evaluation.cli import main as eval_main


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_default_split_is_conversational():
    ds = load_preference_dataset(None, split="test")
    assert len(ds) >= 300
    row = ds[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["constraints"]


def test_standard_jsonl_parquet_and_saved_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}, {"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    assert load_preference_dataset(write_jsonl(tmp_path / "a.jsonl", rows)).to_list() == rows
    Dataset.from_list(rows).to_parquet(tmp_path / "a.parquet")
    assert load_preference_dataset(tmp_path / "a.parquet").to_list() == rows
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(tmp_path / "saved")
    assert load_preference_dataset(tmp_path / "saved").to_list() == rows
    with pytest.raises(DatasetError, match="no split 'test'"):
        load_preference_dataset(tmp_path / "saved", split="test")


def test_implicit_prompt_pairs_are_split_like_trl(tmp_path):
    hh = {
        "chosen": "\n\nHuman: What is tea?\n\nAssistant: A drink made from leaves.",
        "rejected": "\n\nHuman: What is tea?\n\nAssistant: No idea.",
    }
    conv = {
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
    }
    row = load_preference_dataset(write_jsonl(tmp_path / "hh.jsonl", [hh]))[0]
    assert row["prompt"] == "\n\nHuman: What is tea?\n\nAssistant:"
    assert row["chosen"] == " A drink made from leaves." and row["rejected"] == " No idea."
    row = load_preference_dataset(write_jsonl(tmp_path / "conv.jsonl", [conv]))[0]
    assert row["prompt"] == [{"role": "user", "content": "Hi"}]
    assert row["chosen"] == [{"role": "assistant", "content": "Hello!"}]


GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([GOOD, {"prompt": "p", "rejected": "b"}], r"row 2: column 'chosen' is missing"),
        ([GOOD, {"prompt": "p", "chosen": "  ", "rejected": "b"}], r"row 2: column 'chosen': empty"),
        ([{"prompt": "p", "chosen": "same", "rejected": "same"}], r"row 1: chosen and rejected are identical"),
        ([{"prompt": 3, "chosen": "a", "rejected": "b"}], r"row 1: column 'prompt': expected a string, got int"),
        ([{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant"}], "rejected": []}], "row 1"),
        ([{"chosen": "abc", "rejected": "xyz"}], r"row 1: no 'prompt' column and chosen/rejected share no prefix"),
        ([], "no rows"),
    ],
)
def test_bad_rows_name_file_row_and_column(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError, match=message) as info:
        load_preference_dataset(path)
    assert str(path) in str(info.value)


def test_bad_files(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{not json\n')
    with pytest.raises(DatasetError, match=r"broken.jsonl: row 2: not valid JSON"):
        load_preference_dataset(tmp_path / "broken.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_preference_dataset(tmp_path / "x.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="unreadable Parquet"):
        load_preference_dataset(tmp_path / "bad.parquet")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match="unreadable"):
        load_preference_dataset(tmp_path / "latin1.jsonl")
    with pytest.raises(DatasetError, match="no such file"):
        load_preference_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="not a datasets save_to_disk folder"):
        load_preference_dataset(tmp_path)


def test_eval_cli_bad_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "x"}])
    code = eval_main(["--model", "tiny-smollm2", "--dataset", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"orpo-eval: error: {path}: row 1: chosen and rejected are identical"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "tiny-smollm2", "--limit", "0"],
        ["--model", "/no/such/model"],
        ["--endpoint", "x", "--no-generation"],
    ],
)
def test_eval_cli_bad_arguments(tmp_path, capsys, argv):
    assert eval_main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orpo-eval: error: ")
