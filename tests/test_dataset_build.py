"""The committed preference splits: reproducible, leak-free, and every pair labelled correctly."""

import json
from collections import Counter

import pytest

from data import build as build_module
from data.splits import SPLIT_NAMES, SPLITS_DIR, load_split
from data.topics import load_topics
from data.verifiers import KINDS, Constraint, check, check_loose, describe

TEXT_FIELDS = ("id", "topic", "base_prompt", "prompt", "chosen", "rejected", "rejection")


@pytest.fixture(scope="module")
def fresh() -> dict[str, bytes]:
    return build_module.build()


@pytest.fixture(scope="module", params=["train", "test"])
def rows(request) -> list[dict]:
    return load_split(request.param)


def test_committed_splits_equal_a_fresh_build(fresh):
    assert sorted(fresh) == sorted(f"{name}.jsonl" for name in SPLIT_NAMES)
    for name, data in fresh.items():
        assert (SPLITS_DIR / name).read_bytes() == data, f"{name} is stale: run python -m data.build"


def test_sizes():
    assert len(load_split("train")) >= 2000
    assert len(load_split("test")) >= 300


def test_no_test_topic_or_base_prompt_in_train():
    train, test = load_split("train"), load_split("test")
    assert not {r["topic"] for r in train} & {r["topic"] for r in test}
    assert not {r["base_prompt"] for r in train} & {r["base_prompt"] for r in test}
    train_text = "\n".join(r["prompt"] + r["chosen"] + r["rejected"] for r in train)
    topics = {t.id: t for t in load_topics()}
    for topic_id in {r["topic"] for r in test}:
        for sentence in topics[topic_id].sentences:
            assert sentence not in train_text, f"test fact leaked into train: {sentence!r}"


def test_no_empty_fields_and_unique_ids_and_prompts(rows):
    for r in rows:
        for field in TEXT_FIELDS:
            assert isinstance(r[field], str) and r[field].strip(), (r["id"], field)
        assert 1 <= len(r["constraints"]) <= 2
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)


def test_chosen_follows_every_constraint_and_rejected_breaks_one(rows):
    for r in rows:
        constraints = [Constraint.from_dict(c) for c in r["constraints"]]
        assert r["chosen"] != r["rejected"], r["id"]
        assert all(check(r["chosen"], c) for c in constraints), r["id"]
        assert not all(check(r["rejected"], c) for c in constraints), r["id"]
        assert not all(check_loose(r["rejected"], c) for c in constraints), r["id"]


def test_prompt_is_base_prompt_plus_instructions(rows):
    for r in rows:
        constraints = [Constraint.from_dict(c) for c in r["constraints"]]
        assert r["prompt"] == " ".join([r["base_prompt"], *(describe(c) for c in constraints)])


def test_every_kind_and_rejection_type_is_present(rows):
    kinds = Counter(c["kind"] for r in rows for c in r["constraints"])
    assert set(kinds) == set(KINDS)
    mix = Counter(r["rejection"] for r in rows)
    share = {k: v / len(rows) for k, v in mix.items()}
    assert 0.35 <= share["natural"] <= 0.65
    assert 0.2 <= share["near_miss"] <= 0.5
    assert 0.08 <= share["off_topic"] + share["vague"] <= 0.25


@pytest.mark.parametrize("split", ["train", "test"])
def test_conversational_files_hold_the_same_pairs(split):
    plain, chat = load_split(split), load_split(f"{split}_conversational")
    assert len(plain) == len(chat)
    for p, c in zip(plain, chat, strict=True):
        assert c["prompt"] == [{"role": "user", "content": p["prompt"]}]
        assert c["chosen"] == [{"role": "assistant", "content": p["chosen"]}]
        assert c["rejected"] == [{"role": "assistant", "content": p["rejected"]}]
        assert {k: v for k, v in c.items() if k not in ("prompt", "chosen", "rejected")} == {
            k: v for k, v in p.items() if k not in ("prompt", "chosen", "rejected")
        }


def test_lines_are_sorted_key_json():
    with (SPLITS_DIR / "test.jsonl").open(encoding="utf-8") as f:
        line = f.readline()
    assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False) + "\n"


def test_load_split_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown split"):
        load_split("validation")


def test_cli_check_and_write(fresh, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build_module, "build", lambda seed=build_module.SEED: fresh)
    assert build_module.main(["--check"]) == 0
    assert build_module.main(["--check", "--out", str(tmp_path)]) == 1  # nothing there yet
    assert "differ from a fresh build" in capsys.readouterr().err
    assert build_module.main(["--out", str(tmp_path)]) == 0
    assert build_module.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "test.jsonl").write_bytes(b"{}\n")
    assert build_module.main(["--check", "--out", str(tmp_path)]) == 1
