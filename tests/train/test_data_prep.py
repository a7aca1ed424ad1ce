"""train.data_prep: chat formatting and pre-truncation never leave trl an empty response."""

import random

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from orpo_deploy.core.models import resolve_model
from orpo_deploy.train.data_prep import PairFormatError, format_pairs, truncate_pairs

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("tiny-smollm2"))


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def trl_lengths(tokenizer, row):
    """Token counts as trl's tokenize_row makes them: BOS before a prompt without it, EOS after a response."""
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    n_prompt = len(prompt) + (prompt[:1] != [tokenizer.bos_token_id])
    sides = {}
    for key in ("chosen", "rejected"):
        full = tokenizer(row["prompt"] + row[key], add_special_tokens=False)["input_ids"]
        response = full[len(prompt) :]
        sides[key] = len(response) + (response[-1:] != [tokenizer.eos_token_id])
    return n_prompt, sides


def test_chat_template_matches_conversational_form(tokenizer):
    plain = Dataset.from_list([{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No.", "id": "x"}])
    conv = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "Hi?"}],
                "chosen": [{"role": "assistant", "content": "Hello."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            }
        ]
    )
    a, b = format_pairs(plain, tokenizer)[0], format_pairs(conv, tokenizer)[0]
    assert a == b
    assert a["prompt"].endswith("<|im_start|>assistant\n")
    assert a["chosen"] == "Hello.<|im_end|>"  # no trailing newline: trl would append a second EOS after it
    assert set(format_pairs(plain, tokenizer).column_names) == {"prompt", "chosen", "rejected"}


def test_mixed_formats_are_rejected(tokenizer):
    mixed = Dataset.from_list([{"prompt": [{"role": "user", "content": "Hi"}], "chosen": ["x"], "rejected": ["y"]}])
    with pytest.raises(PairFormatError, match="row 0"):
        format_pairs(mixed, tokenizer)


def test_long_prompt_keeps_its_tail_and_responses_survive(tokenizer):
    rng = random.Random(0)
    raw = Dataset.from_list([{"prompt": words(rng, 400), "chosen": words(rng, 50), "rejected": words(rng, 60)}])
    out, stats = truncate_pairs(format_pairs(raw, tokenizer), tokenizer, max_length=128, max_prompt_length=64)
    row = out[0]
    n_prompt, sides = trl_lengths(tokenizer, row)
    assert n_prompt <= 64 and row["prompt"].endswith("<|im_start|>assistant\n")  # the assistant header survives
    assert all(1 < n and n_prompt + n <= 128 for n in sides.values())
    assert stats.prompts_truncated == 1 and stats.responses_truncated == 1 and stats.pairs_out == 1


@pytest.mark.parametrize("seed", range(5))
def test_random_lengths_never_give_empty_or_overlong_pairs(tokenizer, seed):
    rng = random.Random(seed)
    rows = [
        {"prompt": words(rng, rng.randint(1, 300)), "chosen": words(rng, rng.randint(1, 300)), "rejected": "x"}
        for _ in range(20)
    ]
    for row in rows:
        row["rejected"] = words(rng, rng.randint(1, 300))
    max_length, max_prompt_length = 96, 48
    out, stats = truncate_pairs(format_pairs(Dataset.from_list(rows), tokenizer), tokenizer, max_length, 48)
    assert stats.pairs_out == len(out) > 0
    for row in out:
        n_prompt, sides = trl_lengths(tokenizer, row)
        assert n_prompt <= max_prompt_length
        for n in sides.values():
            assert n >= 2, "a response must keep a token besides EOS"
            assert n_prompt + n <= max_length


def test_drop_modes_and_counts(tokenizer):
    rng = random.Random(1)
    same_head = words(rng, 200)
    raw = Dataset.from_list(
        [
            {"prompt": "a", "chosen": "short", "rejected": "other"},  # kept as is
            {"prompt": "b", "chosen": same_head + " one", "rejected": same_head + " two"},  # identical once cut
            {"prompt": "c", "chosen": "   ", "rejected": "fine"},  # empty response
            {"prompt": "d", "chosen": words(rng, 200), "rejected": "fine"},  # truncated
        ]
    )
    formatted = format_pairs(raw, tokenizer)
    out, stats = truncate_pairs(formatted, tokenizer, max_length=96, max_prompt_length=48)
    assert (stats.dropped_identical, stats.dropped_empty, stats.responses_truncated, len(out)) == (1, 1, 2, 2)
    out, stats = truncate_pairs(formatted, tokenizer, max_length=96, max_prompt_length=48, drop_truncated=True)
    assert (stats.dropped_truncated, len(out)) == (2, 1)
