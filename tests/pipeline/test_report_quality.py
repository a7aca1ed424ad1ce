"""The pipeline report's quality section from evaluation folders: intervals, the floor, paired differences."""

import json

import pytest

from orpo_deploy.evaluation.instruct import summarize, verdicts
from orpo_deploy.pipeline.charts import quality_chart
from orpo_deploy.pipeline.quality import COLUMNS, collect_quality, quality_markdown
from orpo_deploy.pipeline.report import read_json

ROWS = [
    {"id": f"test-{i:05d}", "topic": f"t{i % 8}", "template": "in" if i % 3 else "out", "relevance": ["tea"],
     "constraints": [{"kind": "no_commas", "kwargs": {}}]}
    for i in range(40)
]  # fmt: skip


def write_eval(folder, answers):
    vs = verdicts(ROWS, answers)
    folder.mkdir(parents=True)
    floor = {"answer": "SURE.", "candidates": {"SURE.": 0.0}, **summarize(verdicts(ROWS, ["SURE."] * len(ROWS)))}
    result = {"config": {"engine": "hf", "max_new_tokens": 16}, "instruction_following": summarize(vs),
              "constant_baseline": floor}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(result))
    lines = [json.dumps({"id": r["id"], "topic": r["topic"], **v}) for r, v in zip(ROWS, vs, strict=True)]
    (folder / "responses.jsonl").write_text("\n".join(lines) + "\n")


def test_quality_section_has_intervals_floor_templates_and_a_paired_difference(tmp_path):
    write_eval(tmp_path / "eval-base", ["tea, milk"] * 30 + ["tea and milk"] * 10)  # 10 of 40 follow
    write_eval(tmp_path / "eval-orpo", ["tea and milk"] * 40)  # all 40 follow
    write_eval(tmp_path / "eval-served", ["tea and milk"] * 36 + ["tea, milk"] * 4)  # 4 lost: 36 of 40
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "serve.json").write_text(json.dumps({"served": "quantized"}))
    q = collect_quality(
        tmp_path, *(read_json(tmp_path / f / "results.json") for f in ("eval-base", "eval-orpo")), None, read_json
    )
    strict = next(r for r in q["rows"] if r["figure"] == "IF prompt-strict")["values"]
    assert strict["base"]["value"] == 0.25 and strict["ORPO"]["value"] == 1.0
    assert strict["base"]["ci_low"] < 0.25 < strict["base"]["ci_high"]
    assert strict["constant answer (floor)"]["value"] == 0.0  # off topic: fails everything
    assert strict["served"]["value"] == 0.9
    diff = q["diffs"]["ORPO - base"]["prompt_strict"]
    assert diff["value"] == 0.75 and diff["excludes_zero"] and diff["clusters"] == 8
    lost = q["diffs"]["served - ORPO"]["prompt_strict"]
    assert lost["value"] == pytest.approx(-0.1) and lost["ci_low"] < -0.1 < lost["ci_high"]
    assert set(q["by_template"]) == {"in", "out"} and set(q["by_template"]["in"]) == {"base", "ORPO", "served"}
    text = "\n".join(quality_markdown(q, {"base": "orpo-eval"}))
    assert "+0.750 [" in text and "(differs)" in text and "constant answer (floor)" in text
    assert "| served (4-bit export) | constant answer (floor) |" in text
    assert "-0.100 [" in text and "IFEval" not in text  # no IFEval results in this run: no IFEval table
    assert quality_chart(q["rows"], list(COLUMNS), tmp_path / "q.png").stat().st_size > 0


def test_rounds_are_collected_in_order_with_their_dev_figures(tmp_path):
    import json

    from orpo_deploy.pipeline.report import collect_rounds

    for suffix, pairs, mean in (("", 120, 0.31), ("-2", 150, 0.42)):
        (tmp_path / f"pairs{suffix}").mkdir()
        (tmp_path / f"pairs{suffix}" / "stats.json").write_text(
            json.dumps({"pairs": pairs, "answer_pass_rate": 0.2, "answers_cut_at_limit": 0.1})
        )
        (tmp_path / f"dev{suffix}").mkdir()
        result = {"instruction_following": {"mean": mean, "ci": {"mean": [mean - 0.05, mean + 0.05]},
                                            "prompt_strict": mean - 0.1, "prompts": 160},
                  "generation": {"hit_token_limit": 7}}  # fmt: skip
        (tmp_path / f"dev{suffix}" / "results.json").write_text(json.dumps(result))
    rounds = collect_rounds(tmp_path)
    assert [(r["round"], r["pairs"], r["dev_mean"]) for r in rounds] == [(1, 120, 0.31), (2, 150, 0.42)]
    assert rounds[1]["dev_mean_ci"] == [0.37, 0.47] and rounds[1]["dev_hit_limit"] == 7
