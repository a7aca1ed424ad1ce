"""orpo-data generate: judging and pair picking by hand, bad input in one line, and a real (tiny, HF) sampling run
that is killed mid-way and resumes to the same bytes."""

import json
import subprocess
import sys

import pytest

from orpo_deploy.data import onpolicy
from orpo_deploy.data.onpolicy import GenerateConfig, GenerateError, build_pairs, judge, pick_pair, prompt_row

ROW = prompt_row(
    {"id": "r1", "prompt": "Tell me about the moon. Do not use any commas.",
     "constraints": [{"kind": "no_commas", "kwargs": {}}, {"kind": "max_words", "kwargs": {"n": 8}}],
     "relevance": ["moon"], "topic": "moon"},
    "test",
)  # fmt: skip


def answer(i, text, finish="stop"):
    return {"index": i, "text": text, "finish_reason": finish, "tokens": None, **judge(ROW, text)}


def test_judge_by_hand():
    assert judge(ROW, "The moon is bright.") == {"fails": [], "relevant": True, "passes": True}
    assert judge(ROW, "The moon, bright.")["fails"] == ["no_commas"]
    # off topic fails every constraint, whatever its form
    assert judge(ROW, "The sun is bright.") == {"fails": ["no_commas", "max_words"], "relevant": False, "passes": False}


def test_pick_pair_rule():
    answers = [
        answer(0, "The moon is a rock in the sky."),  # passes, 8 words
        answer(1, "The moon is round."),  # passes, shorter: chosen
        answer(2, "The moon glows.", finish="length"),  # passes but was cut: not chosen
        answer(3, "The moon, the moon."),  # fails one
        answer(4, "The sun, the stars, and more and more and more."),  # fails both: rejected
    ]
    chosen, rejected, why = pick_pair(answers)
    assert (chosen["index"], rejected["index"], why) == (1, 4, None)
    # a tie on failures goes to the answer cut at the limit
    tie = [answers[1], answer(5, "The moon, glows."), answer(6, "The moon, rises.", finish="length")]
    assert pick_pair(tie)[1]["index"] == 6
    assert pick_pair([answers[3], answers[4]]) == (None, None, "no answer passed")
    assert pick_pair([answers[0], answers[1]]) == (None, None, "every answer passed")


def test_build_pairs_stats_by_hand():
    samples = {"r1": [answer(0, "The moon is round."), answer(1, "The moon, the moon.", finish="length")]}
    pairs, stats = build_pairs([ROW], samples)
    assert len(pairs) == 1 and pairs[0]["chosen"] == [{"role": "assistant", "content": "The moon is round."}]
    assert pairs[0]["rejected_fails"] == ["no_commas"] and pairs[0]["rejected_finish"] == "length"
    assert stats["answer_pass_rate"] == 0.5 and stats["answers_cut_at_limit"] == 0.5
    assert stats["pass_rate_by_kind"] == {"max_words": 1.0, "no_commas": 0.5}
    assert stats["pairs"] == 1 and stats["dropped"] == {}
    from orpo_deploy.data.load import normalise_pair

    normalise_pair(pairs[0], "pairs", 0)  # what the trainer's loader accepts


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "", "constraints": [{"kind": "no_commas", "kwargs": {}}]}', "row 1: 'prompt' must be"),
        ('{"prompt": "hi"}', "row 1: 'constraints' must be a non-empty list"),
        ('{"prompt": "hi", "constraints": [{"kind": "rhyme", "kwargs": {}}]}', "row 1: bad constraint: unknown"),
        ('{"prompt": "hi", "constraints": [{"kind": "max_words", "kwargs": {}}]}', "row 1: bad constraint: max_words"),
        ("not json", "line 2: not JSON"),
    ],
)
def test_bad_prompts_are_one_line_naming_the_row(tmp_path, line, message):
    good = '{"prompt": "hi", "constraints": [{"kind": "no_commas", "kwargs": {}}]}'
    path = tmp_path / "p.jsonl"
    path.write_text(good + "\n" + line + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orpo_deploy.data.cli", "generate", "--model", "tiny-smollm2", "--prompts", str(path),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("orpo-data: error:") and message in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_settings_are_checked():
    with pytest.raises(GenerateError, match="test is report-only"):
        GenerateConfig(model="x", split="test")
    with pytest.raises(GenerateError, match="k must be >= 2"):
        GenerateConfig(model="x", k=1)
    with pytest.raises(GenerateError, match="exactly one of"):
        GenerateConfig()


def test_tiny_run_resumes_after_a_kill_to_the_same_samples(tmp_path, monkeypatch):
    def cfg(out):
        return GenerateConfig(model="tiny-smollm2", engine="hf", split="dev", limit=6, k=2, max_new_tokens=6,
                              chunk_size=2, output=str(out))  # fmt: skip

    whole = onpolicy.run(cfg(tmp_path / "whole"))
    real, calls = onpolicy.sample_chunk, []

    def dies_on_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(onpolicy, "sample_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        onpolicy.run(cfg(tmp_path / "resumed"))
    assert not (tmp_path / "resumed").exists()  # nothing half-written where the output goes
    assert len(list((tmp_path / ".resumed.samples").glob("chunk-*.jsonl"))) == 1
    monkeypatch.setattr(onpolicy, "sample_chunk", real)
    resumed = onpolicy.run(cfg(tmp_path / "resumed"))
    assert (resumed / "samples.jsonl").read_text() == (whole / "samples.jsonl").read_text()
    stats = json.loads((resumed / "stats.json").read_text())
    assert stats["prompts"] == 6 and stats["answers"] == 12
    # a random tiny model passes nothing: every prompt is dropped, and said so
    assert stats["pairs"] == 0 and stats["dropped"] == {"no answer passed": 6}
    manifest = json.loads(next(resumed.glob("*manifest*.json")).read_text())
    assert manifest["stage"] == "onpolicy_pairs" and manifest["prompts"]["split"] == "dev"
    with pytest.raises(GenerateError, match="other settings"):
        (tmp_path / ".again.samples").mkdir()
        (tmp_path / ".again.samples" / "settings.json").write_text(json.dumps({"k": 3}))
        onpolicy.run(cfg(tmp_path / "again"))
