"""The committed preference splits: reproducible, leak-free, and every pair labelled correctly."""

import json
from collections import Counter

import pytest

from orpo_deploy.data import build as build_module
from orpo_deploy.data.splits import SPLIT_NAMES, SPLITS_DIR, load_split
from orpo_deploy.data.topics import load_topics
from orpo_deploy.data.verifiers import (
    KINDS,
    TEST_ONLY_KINDS,
    TRAIN_KINDS,
    Constraint,
    check,
    check_loose,
    describe,
    relevant,
)

V1_TEST_TOPICS = (
    "atoms", "bee_pollination", "berlin_wall", "bird_migration", "boiling_pasta", "composting", "cooking_rice",
    "debugging", "dental_care", "diversification", "emergency_fund", "fractions", "http_apis", "hurricanes",
    "job_interview", "jupiter", "lithium_batteries", "mars", "mnemonics", "note_taking", "olympics", "origami",
    "photosynthesis", "printing_3d", "pyramids_giza", "sahara", "supply_demand", "swimming_strokes",
    "time_management", "time_zones", "vitamin_d", "watercolor",
)  # fmt: skip
TEXT_FIELDS = ("id", "topic", "base_prompt", "prompt", "chosen", "rejected", "rejection", "template")


@pytest.fixture(scope="module")
def fresh() -> dict[str, bytes]:
    return build_module.build()


@pytest.fixture(scope="module", params=["train", "dev", "test"])
def rows(request) -> list[dict]:
    return load_split(request.param)


def test_committed_splits_equal_a_fresh_build(fresh):
    assert sorted(fresh) == sorted(f"{name}.jsonl" for name in SPLIT_NAMES)
    for name, data in fresh.items():
        assert (SPLITS_DIR / name).read_bytes() == data, f"{name} is stale: run python -m orpo_deploy.data.build"


def test_sizes():
    assert len(load_split("train")) >= 2000
    assert len(load_split("dev")) >= 150
    assert len(load_split("test")) >= 600


@pytest.mark.parametrize("held_out", ["dev", "test"])
def test_no_held_out_topic_or_base_prompt_in_train(held_out):
    train, other = load_split("train"), load_split(held_out)
    assert not {r["topic"] for r in train} & {r["topic"] for r in other}
    assert not {r["base_prompt"] for r in train} & {r["base_prompt"] for r in other}
    train_text = "\n".join(r["prompt"] + r["chosen"] + r["rejected"] for r in train)
    topics = {t.id: t for t in load_topics()}
    for topic_id in {r["topic"] for r in other}:
        for sentence in topics[topic_id].sentences:
            assert sentence not in train_text, f"{held_out} fact leaked into train: {sentence!r}"


def test_dev_and_test_topics_are_disjoint_and_test_keeps_v1_topics():
    dev, test = {r["topic"] for r in load_split("dev")}, {r["topic"] for r in load_split("test")}
    assert not dev & test and len(dev) == 16 and len(test) == 32
    # dataset v1's held-out topics, so that a model trained on v1's train split never saw a v2 test topic
    assert test == set(V1_TEST_TOPICS)


def _instructions(row: dict) -> str:
    return row["prompt"][len(row["base_prompt"]) :].strip()


def test_out_of_template_rows_use_wordings_values_and_kinds_never_in_train():
    train_text = {_instructions(r) for r in load_split("train")}
    train_kinds = {c["kind"] for r in load_split("train") for c in r["constraints"]}
    assert train_kinds == set(TRAIN_KINDS)
    train_sentences = {describe(Constraint.from_dict(c)) for r in load_split("train") for c in r["constraints"]}
    out = [r for r in load_split("test") if r["template"] == "out"]
    inside = [r for r in load_split("test") if r["template"] == "in"]
    assert len(out) >= 400 and len(inside) >= 150
    for r in out:
        text = _instructions(r)
        assert text not in train_text
        assert not any(s in text for s in train_sentences), r["id"]
    out_kinds = Counter(c["kind"] for r in out for c in r["constraints"])
    assert all(out_kinds[k] >= 15 for k in TEST_ONLY_KINDS), out_kinds
    assert not any(c["kind"] in TEST_ONLY_KINDS for r in inside for c in r["constraints"])


def test_chosen_is_relevant_and_constant_answers_are_not(rows):
    for r in rows:
        assert relevant(r["chosen"], r["relevance"]), r["id"]
    for constant in ("SURE.", "Sure. Here is my answer.\n\n1. First point.\n2. Second point."):
        assert sum(relevant(constant, r["relevance"]) for r in rows) == 0


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
        if r["template"] == "in":
            assert r["prompt"] == " ".join([r["base_prompt"], *(describe(c) for c in constraints)])
        else:
            wordings = [{describe(c, i) for i in range(len(KINDS[c.kind].paraphrases))} for c in constraints]
            rest = _instructions(r)
            assert r["prompt"].startswith(r["base_prompt"] + " ")
            assert any(rest.startswith(w) for w in wordings[0]) and any(rest.endswith(w) for w in wordings[-1])


def test_every_kind_and_rejection_type_is_present(rows):
    kinds = Counter(c["kind"] for r in rows for c in r["constraints"])
    assert set(kinds) == (set(KINDS) if rows[0]["id"].startswith("test") else set(TRAIN_KINDS))
    mix = Counter(r["rejection"] for r in rows)
    share = {k: v / len(rows) for k, v in mix.items()}
    assert 0.35 <= share["natural"] <= 0.65
    assert 0.2 <= share["near_miss"] <= 0.5
    assert 0.08 <= share["off_topic"] + share["vague"] <= 0.25


@pytest.mark.parametrize("split", ["train", "dev", "test"])
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
