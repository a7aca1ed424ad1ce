"""IFEval offline: Google's prompts and checkers from the wheel; verdicts equal the untouched reference code."""

import pytest

from orpo_deploy.evaluation import ifeval

# Answers that exercise most checkers one way or the other; each is scored against all 541 prompts.
ANSWERS = (
    "SURE.",
    "sure, here is the answer to your question. it is short and all lowercase.",
    "HERE IS MY ANSWER IN CAPITAL LETTERS, WITH A COMMA.",
    '{"answer": "Here is the answer to your question."}',
    "<<A Title>>\n\n* first point about it\n* second point\n* third point\n\nP.S. one more thing.",
    "SECTION 1\nThe *first* part.\n\nSECTION 2\nThe *second* part.\n\n***\n\nAnything else? Is there anything else "
    "I can help with?",
    '"Paris is the capital of France. It has [number] museums and [name] lives there."',
    "My answer is yes.",
    "Dear [name],\n\nThis is a letter. It has words like lunch, lunch and lunch.\n\nBest regards",
)


@pytest.fixture(scope="module")
def prompts():
    return ifeval.load_prompts()


def test_prompts_are_the_541_of_the_paper(prompts):
    assert len(prompts) == 541
    assert sum(len(p["instruction_id_list"]) for p in prompts) == 834
    assert len({t for p in prompts for t in p["instruction_id_list"]}) == 25
    assert set(ifeval.COVERED) <= {t for p in prompts for t in p["instruction_id_list"]}


def test_subset_is_evenly_spaced(prompts):
    sub = ifeval.load_prompts(limit=4)
    assert [p["key"] for p in sub] == [prompts[i]["key"] for i in (0, 135, 270, 405)]


def test_verdicts_equal_the_reference_checkers_wherever_punkt_is_not_involved(prompts):
    reference = ifeval.load_checkers(offline=False)
    usable = [p for p in prompts if not set(p["instruction_id_list"]) & set(ifeval.PUNKT_TYPES)]
    assert len(usable) > 450
    compared = 0
    for answer in ANSWERS:
        ours = ifeval.check(usable, [answer] * len(usable))
        for p, v in zip(usable, ours, strict=True):
            example = reference.InputExample(p["key"], p["instruction_id_list"], p["prompt"], p["kwargs"])
            lookup = {p["prompt"]: answer}
            with ifeval.seeded(p["key"]):  # the reference draws a random letter for two prompts ("#", "!")
                strict = reference.test_instruction_following_strict(example, lookup).follow_instruction_list
            with ifeval.seeded(p["key"]):
                loose = reference.test_instruction_following_loose(example, lookup).follow_instruction_list
            assert (v["strict"], v["loose"]) == (strict, loose), (p["key"], answer)
            compared += len(v["strict"])
    assert compared > 6000


def test_verdicts_repeat():
    rows = [p for p in ifeval.load_prompts() if "keywords:letter_frequency" in p["instruction_id_list"]]
    answer = "Hello!!! #### a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3
    assert ifeval.check(rows, [answer] * len(rows)) == ifeval.check(rows, [answer] * len(rows))


def test_the_reference_needs_punkt_and_ours_does_not(prompts):
    sentences = next(p for p in prompts if "length_constraints:number_sentences" in p["instruction_id_list"])
    reference = ifeval.load_checkers(offline=False)
    example = reference.InputExample(
        sentences["key"], sentences["instruction_id_list"], sentences["prompt"], sentences["kwargs"]
    )
    with pytest.raises(LookupError):  # nltk's punkt data is not installed here: the deviation is real
        reference.test_instruction_following_strict(example, {sentences["prompt"]: "One. Two. Three."})
    assert len(ifeval.check([sentences], ["One. Two. Three."])) == 1


def test_offline_sentence_count_and_capital_words():
    ev = ifeval.load_checkers()
    registry = ev.instructions_registry.INSTRUCTION_DICT
    count = registry["length_constraints:number_sentences"]("x")
    count.build_description(num_sentences=3, relation="at least")
    assert count.check_following("The sky is blue. Grass is green! Is water wet?")
    assert not count.check_following("Only one sentence here.")
    capitals = registry["change_case:capital_word_frequency"]("x")
    capitals.build_description(capital_frequency=2, capital_relation="at least")
    assert capitals.check_following("This is VERY important. READ it.")
    assert not capitals.check_following("This is VERY important.")


def test_summary_has_the_four_figures_their_mean_and_covered_split(prompts):
    verdicts = ifeval.check(prompts, ["SURE."] * len(prompts))
    s = ifeval.summarize(verdicts)
    for name in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "mean"):
        assert s[name]["ci_low"] <= s[name]["value"] <= s[name]["ci_high"]
    assert s["covered"]["strict"]["n"] + s["uncovered"]["strict"]["n"] >= 541
    assert set(s["per_type"]) == {t for p in prompts for t in p["instruction_id_list"]}
    assert all(v["covered"] == (t in ifeval.COVERED) for t, v in s["per_type"].items())
