"""Workload rows: ours, OpenAI messages, ShareGPT (target length from the reply), bad rows named."""

from __future__ import annotations

import json

import pytest

from orpo_deploy.loadtest.cli import main
from orpo_deploy.loadtest.workload import WorkloadError, load, parse_row


def test_row_formats():
    assert parse_row({"prompt": "hi"}, "r") == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": None}
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse_row({"messages": msgs, "max_tokens": 7}, "r") == {"messages": msgs, "max_tokens": 7}
    share = {"conversations": [{"from": "human", "value": "Tell me a story."}, {"from": "gpt", "value": "w " * 100}]}
    assert parse_row(share, "r") == {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 130}
    for bad, message in (({"prompt": ""}, "needs 'prompt'"), ({"conversations": []}, "human turn"),
                         ({"prompt": "x", "max_tokens": 0}, "positive integer")):  # fmt: skip
        with pytest.raises(WorkloadError, match=message):
            parse_row(bad, "line 3")


def test_the_default_workload_loads():
    from orpo_deploy.data.load import (
        default_split_path,  # the locustfile's default (importing it would patch with gevent)
    )

    assert len(load(default_split_path("test"))) == 640


def test_a_bad_workload_is_one_line_before_any_load(tmp_path, capsys):
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"nothing": 1}) + "\n")
    assert main(["--host", "http://127.0.0.1:9", "--prompts", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 2" in err and err.count("\n") == 0
