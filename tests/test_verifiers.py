"""Hand-written passing and failing responses for every constraint kind, and IFEval's loose mode."""

import pytest

from orpo_deploy.data.verifiers import (
    KINDS,
    TEST_ONLY_KINDS,
    TRAIN_KINDS,
    Constraint,
    check,
    check_loose,
    count_words,
    describe,
    loose_variants,
    relevant,
)

# (kind, kwargs, response, expected strict result)
CASES = [
    ("lowercase", {}, "hello world, all lower case 123.", True),
    ("lowercase", {}, "Hello world.", False),
    ("lowercase", {}, "1234 !!!", False),  # no cased letter at all
    ("uppercase", {}, "THE WORLD IS ROUND, 42 TIMES OVER.", True),
    ("uppercase", {}, "HELLO World.", False),
    ("uppercase", {}, "42", False),
    ("max_words", {"n": 5}, "one two three four five", True),
    ("max_words", {"n": 5}, "It's a fine day.", True),  # It, s, a, fine, day
    ("max_words", {"n": 5}, "one two three four five six", False),
    ("min_words", {"n": 3}, "a b c", True),
    ("min_words", {"n": 3}, "well-known", False),  # two \w+ tokens
    ("min_words", {"n": 3}, "a b", False),
    ("include_keywords", {"keywords": ["photosynthesis", "oxygen"]}, "Photosynthesis releases OXYGEN.", True),
    ("include_keywords", {"keywords": ["photosynthesis", "oxygen"]}, "Photosynthesis releases gas.", False),
    ("include_keywords", {"keywords": ["oxygen"]}, "Blood is oxygenated.", False),  # whole words only
    ("avoid_keywords", {"keywords": ["gas"]}, "Gasoline is a liquid.", True),
    ("avoid_keywords", {"keywords": ["gas", "air"]}, "Air is a mixture.", False),
    ("avoid_keywords", {"keywords": ["gas"]}, "A GAS expands.", False),
    ("keyword_frequency", {"keyword": "moon", "n": 2}, "The moon rose. The Moon set.", True),
    ("keyword_frequency", {"keyword": "moon", "n": 2}, "The moon rose in the moonlight.", False),
    ("json_format", {}, '{"topic": "tea", "answer": "Steep it."}', True),
    ("json_format", {}, '```json\n{"answer": [1, 2]}\n```', True),
    ("json_format", {}, '  ["tea leaves", 2]  ', True),
    ("json_format", {}, "{'a': 1}", False),
    ("json_format", {}, '{"a": 1', False),
    ("json_format", {}, 'Here you go: {"a": 1}', False),
    ("numbered_list", {"n": 3}, "Steps:\n1. Boil water.\n2. Add tea.\n3. Wait.", True),
    ("numbered_list", {"n": 3}, "1. Boil water.\n2. Add tea.", False),
    ("numbered_list", {"n": 3}, "1. Boil it.\n2. Add tea.\n3. Wait now.\n4. Drink up.", False),
    ("numbered_list", {"n": 3}, "1. Boil.\n3. Add.\n4. Wait.", False),
    ("numbered_list", {"n": 3}, "1) Boil.\n2) Add.\n3) Wait.", False),
    ("bullet_list", {"n": 2}, "* first point\n* second point", True),
    ("bullet_list", {"n": 2}, "Intro:\n- first point\n* second point", True),
    ("bullet_list", {"n": 2}, "**Bold heading**\n* only one", False),
    ("bullet_list", {"n": 2}, "* one\n* two\n* three", False),
    ("bullet_list", {"n": 2}, "1. one\n2. two", False),
    ("end_with", {"phrase": "Any other questions?"}, "Tea is nice. Any other questions?  \n", True),
    ("end_with", {"phrase": "Any other questions?"}, "Tea is nice. Any other questions? Bye.", False),
    ("end_with", {"phrase": "Any other questions?"}, "Tea is nice. any other questions?", False),
    ("start_with", {"phrase": "Sure."}, "  Sure. Tea is nice.", True),
    ("start_with", {"phrase": "Sure."}, "Hello! Sure. Tea is nice.", False),
    ("start_with", {"phrase": "Sure."}, "sure. tea is nice.", False),
    ("no_commas", {}, "No commas here. None at all.", True),
    ("no_commas", {}, "One, two.", False),
    ("paragraphs", {"n": 2}, "First part.\n\n***\n\nSecond part.", True),
    ("paragraphs", {"n": 2}, "First part.\n***\nSecond part.\n***", True),  # empty last part is allowed
    ("paragraphs", {"n": 2}, "First part.\n\nSecond part.", False),
    ("paragraphs", {"n": 2}, "First part.\n***\n***\nSecond part.", False),  # empty paragraph in the middle
    ("paragraphs", {"n": 2}, "One.\n***\nTwo.\n***\nThree.", False),
    ("title", {}, "<<The Water Cycle>>\n\nWater evaporates.", True),
    ("title", {}, "The Water Cycle\n\nWater evaporates.", False),
    ("title", {}, "<<   >>\nWater evaporates.", False),
    ("title", {}, "<The Water Cycle>\nWater evaporates.", False),
    ("postscript", {"marker": "P.S."}, "Body text.\n\nP.S. See you soon.", True),
    ("postscript", {"marker": "P.S."}, "Body text.\n\np.s. case does not matter.", True),
    ("postscript", {"marker": "P.S."}, "Body text only.", False),
    ("postscript", {"marker": "P.S."}, "Body.\n\nP.S. A note.\n\nMore body after it.", False),
    ("postscript", {"marker": "P.S."}, "Body.\n\nP.S.", False),  # marker without text
    ("postscript", {"marker": "P.P.S."}, "Body.\n\nP.P.S. Another note.", True),
    ("postscript", {"marker": "P.P.S."}, "Body.\n\nP.S. Wrong marker.", False),
    ("placeholders", {"n": 2}, "Dear [name], we meet at [address].", True),
    ("placeholders", {"n": 2}, "Dear [name], we meet soon.", False),
    ("placeholders", {"n": 2}, "Dear (name), we meet at (address).", False),
    ("quotation", {}, '"Tea is nice."', True),
    ("quotation", {}, '  "Tea is nice."  \n', True),
    ("quotation", {}, 'Tea is "nice"', False),
    ("quotation", {}, "'Tea is nice.'", False),
    ("quotation", {}, '"', False),
    ("sections", {"n": 2}, "SECTION 1\nTea is nice.\n\nSECTION 2\nCoffee is too.", True),
    ("sections", {"n": 2}, "SECTION 1\nTea only.", False),
    ("sections", {"n": 2}, "Section 1\nTea.\nSection 2\nCoffee.", False),
    ("sections", {"n": 2}, "SECTION 1\nTea.\nSECTION 3\nCoffee.", False),
    ("sections", {"n": 2}, "SECTION 1\nA.\nSECTION 2\nB.\nSECTION 3\nC.", False),
    ("highlights", {"n": 2}, "Tea is *grown in hills* and *picked by hand* each spring.", True),
    ("highlights", {"n": 2}, "Tea is *grown in hills* and **picked by hand** each spring.", False),
    ("repeat_request", {"request": "Why is tea green?"}, "Why is tea green? Because it is not oxidised.", True),
    ("repeat_request", {"request": "Why is tea green?"}, "Tea is green because it is not oxidised.", False),
    ("capital_words", {"n": 2}, "Tea is VERY good and REALLY cheap.", True),
    ("capital_words", {"n": 2}, "Tea is VERY good and really cheap.", False),
]

# One degenerate answer per hardened check (issue "Quality you can trust, 1 of 2"): each passed before dataset v2.
DEGENERATE = [
    ("numbered_list", {"n": 3}, "1.\n2.\n3. "),
    ("bullet_list", {"n": 3}, "-\n-\n-"),
    ("placeholders", {"n": 3}, "[][][]"),
    ("sections", {"n": 2}, "SECTION 1\nSECTION 2"),
    ("quotation", {}, '""'),
    ("end_with", {"phrase": "Any other questions?"}, "Any other questions?"),
    ("start_with", {"phrase": "Sure."}, "Sure.ly tea is nice."),
    ("lowercase", {}, "la tierra es redonda"),
    ("json_format", {}, "42"),
    ("min_words", {"n": 80}, "the " * 80),
    ("no_commas", {}, "Tea\uff0c coffee and milk."),
    ("paragraphs", {"n": 2}, "***\n***\n***"),
    ("postscript", {"marker": "P.S."}, "P.S. see above"),
    ("title", {}, "<<!!>> Tea is nice."),
    ("highlights", {"n": 2}, "** ** and * *"),
]

# (kind, kwargs, response): fails the strict check, passes IFEval's loose check.
LOOSE_ONLY = [
    ("lowercase", {}, "Sure! Here is my answer:\nall of it in lower case."),  # first line removed
    ("end_with", {"phrase": "Any other questions?"}, "Tea is nice. Any other questions?\nHope that helps!"),
    ("json_format", {}, 'Here is the JSON:\n{"a": 1}'),
    ("start_with", {"phrase": "Sure."}, "**Sure.** Tea is nice."),  # markdown * removed
    ("quotation", {}, '"Tea is nice."\nNote: written by me'),
    ("no_commas", {}, "Well, here goes\nno commas in this line\nor this one"),
    ("max_words", {"n": 3}, "Here is my short answer\none two three"),
    ("sections", {"n": 1}, "SECTION 1\nTea.\nSECTION 2 is a typo on the last line"),
]

# (kind, kwargs, response): fails both, because the violation is not on the first or last line.
LOOSE_FAILS_TOO = [
    ("lowercase", {}, "all lower here\nBut A Capital Here\nlower again"),
    ("no_commas", {}, "first line\nsecond, with a comma\nthird line"),
    ("numbered_list", {"n": 3}, "1. a\n2. b"),
    ("end_with", {"phrase": "Any other questions?"}, "Tea is nice. Any other questions? Bye."),
]


@pytest.mark.parametrize(("kind", "kwargs", "response", "expected"), CASES)
def test_strict_check(kind, kwargs, response, expected):
    assert check(response, Constraint(kind, kwargs)) is expected


@pytest.mark.parametrize(("kind", "kwargs", "response"), DEGENERATE)
def test_degenerate_answers_fail(kind, kwargs, response):
    c = Constraint(kind, kwargs)
    assert not check(response, c)
    assert not check_loose(response, c)


def test_relevance_needs_a_topic_word():
    words = ["photosynthesis", "chlorophyll", "sunlight"]
    assert relevant("Plants turn SUNLIGHT into sugar.", words)
    assert not relevant("SURE.", words)
    assert not relevant("Sunlighting is a word I made up.", words)  # whole words only


def test_test_only_kinds_have_only_paraphrases_in_test():
    assert set(TEST_ONLY_KINDS) <= set(KINDS) and not set(TEST_ONLY_KINDS) & set(TRAIN_KINDS)
    for kind, spec in KINDS.items():
        assert len(spec.paraphrases) >= 2, kind
        kwargs = next(kw for k, kw, _, _ in CASES if k == kind)
        train = describe(Constraint(kind, kwargs))
        for i in range(len(spec.paraphrases)):
            assert describe(Constraint(kind, kwargs), paraphrase=i) != train


@pytest.mark.parametrize(("kind", "kwargs", "response", "expected"), CASES)
def test_strict_pass_implies_loose_pass(kind, kwargs, response, expected):
    c = Constraint(kind, kwargs)
    if check(response, c):
        assert check_loose(response, c)


def test_every_kind_has_passing_and_failing_cases():
    for kind in KINDS:
        results = {expected for k, _, _, expected in CASES if k == kind}
        assert results == {True, False}, kind


@pytest.mark.parametrize(("kind", "kwargs", "response"), LOOSE_ONLY)
def test_loose_accepts_what_strict_rejects(kind, kwargs, response):
    c = Constraint(kind, kwargs)
    assert not check(response, c)
    assert check_loose(response, c)


@pytest.mark.parametrize(("kind", "kwargs", "response"), LOOSE_FAILS_TOO)
def test_loose_still_rejects_violations_in_the_middle(kind, kwargs, response):
    c = Constraint(kind, kwargs)
    assert not check(response, c)
    assert not check_loose(response, c)


def test_loose_variants_match_ifeval():
    variants = loose_variants("*first*\nmiddle *x*\nlast")
    assert variants == [
        "*first*\nmiddle *x*\nlast",
        "first\nmiddle x\nlast",
        "middle *x*\nlast",
        "*first*\nmiddle *x*",
        "middle *x*",
        "middle x\nlast",
        "first\nmiddle x",
        "middle x",
    ]


@pytest.mark.parametrize("kind", list(KINDS))
def test_blank_response_never_passes(kind):
    kwargs = next(kw for k, kw, _, _ in CASES if k == kind)
    for response in ("", "   \n"):
        assert not check(response, Constraint(kind, kwargs))
        assert not check_loose(response, Constraint(kind, kwargs))


@pytest.mark.parametrize("kind", list(KINDS))
def test_describe_and_round_trip(kind):
    kwargs = next(kw for k, kw, _, _ in CASES if k == kind)
    c = Constraint(kind, kwargs)
    text = describe(c)
    assert text and text[-1] in '.?"' and "\n" not in text
    for value in kwargs.values() if kind != "repeat_request" else ():  # the request is the prompt itself
        for v in value if isinstance(value, list) else [value]:
            assert str(v) in text
    assert Constraint.from_dict(c.to_dict()) == c


def test_describe_wording():
    assert describe(Constraint("max_words", {"n": 50})) == "Answer with at most 50 words."
    assert describe(Constraint("avoid_keywords", {"keywords": ["gas"]})) == (
        "Do not include the word gas in your response."
    )
    assert describe(Constraint("include_keywords", {"keywords": ["a", "b", "c"]})) == (
        "Include the keywords a, b and c in your response."
    )


def test_from_dict_ignores_none_kwargs_as_datasets_writes_them():
    row = {"kind": "max_words", "kwargs": {"n": 40, "keywords": None, "phrase": None}}
    assert Constraint.from_dict(row) == Constraint("max_words", {"n": 40})


def test_bad_constraints_raise():
    with pytest.raises(ValueError, match="unknown constraint kind"):
        Constraint("shout")
    with pytest.raises(ValueError, match="takes kwargs"):
        Constraint("max_words", {})
    with pytest.raises(ValueError, match="takes kwargs"):
        Constraint("lowercase", {"n": 1})


def test_count_words_like_ifeval_regexp_tokenizer():
    assert count_words("Hello, world! It's 9.8 m/s.") == 8  # Hello world It s 9 8 m s
    assert count_words("") == 0
