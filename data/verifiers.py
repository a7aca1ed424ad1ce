"""Verifiable instructions in the style of IFEval (Zhou et al., 2023, arXiv:2311.07911).

Each constraint kind has an instruction sentence (`describe`) and a strict checker (`check`). `check_loose` is
IFEval's loose mode: the strict check passes on any of eight variants of the response (first and/or last line
removed, markdown ``*`` removed), as in google-research ``instruction_following_eval/evaluation_lib.py``.

Where a kind also exists in IFEval its check follows IFEval's code, except where a checker's docstring says.
Words are counted like IFEval's nltk ``RegexpTokenizer(r"\\w+")``, here with the stdlib ``re``.
Everything is pure and uses the standard library only.

Hardened against degenerate answers (dataset v2): list items, sections, paragraphs, quotations and the text around
a start or end phrase must hold words (``MIN_WORDS``), placeholders must name something, JSON must be an object or
an array that holds text, "at least n words" needs varied words, case kinds need English, "no commas" covers the
full-width and other script commas. Where that is stricter than IFEval the checker's docstring says so. None of
this makes an answer *about* the question: `relevant` does that, and the scorer requires it for every verdict.

Kinds in `TEST_ONLY_KINDS` appear only in the test split: they measure whether following instructions transfers
to kinds never trained on. Each kind has a train wording (`describe`, used by train and dev) and paraphrases used
only by the test split's out-of-template rows (`describe(c, paraphrase=i)`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Constraint:
    """One verifiable instruction: a registered `kind` and its keyword arguments (see `KINDS`)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown constraint kind {self.kind!r}; known: {', '.join(KINDS)}")
        expected = set(KINDS[self.kind].params)
        if set(self.kwargs) != expected:
            raise ValueError(f"{self.kind} takes kwargs {sorted(expected)}, got {sorted(self.kwargs)}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Constraint:
        """Inverse of `to_dict`; drops None kwargs, which datasets adds for struct fields a row lacks."""
        kwargs = {k: v for k, v in (d.get("kwargs") or {}).items() if v is not None}
        return cls(kind=d["kind"], kwargs=kwargs)


def count_words(text: str) -> int:
    """Number of ``\\w+`` tokens, as IFEval's nltk RegexpTokenizer counts them."""
    return len(re.findall(r"\w+", text))


def _word_pattern(word: str) -> re.Pattern[str]:
    return re.compile(r"\b" + re.escape(word) + r"\b", flags=re.IGNORECASE)


def count_occurrences(text: str, word: str) -> int:
    """Case-insensitive whole-word occurrences of `word` in `text`."""
    return len(_word_pattern(word).findall(text))


def _named(noun: str, words: list[str], conj: str) -> str:
    """'keyword tea' or 'keywords tea, milk and sugar'."""
    if len(words) == 1:
        return f"{noun} {words[0]}"
    return f"{noun}s " + ", ".join(words[:-1]) + f" {conj} " + words[-1]


# --- checkers: (response, **kwargs) -> bool -------------------------------------------------------------


MIN_WORDS = 1  # words a list item, section, paragraph, quotation or the text around a phrase must hold
COMMAS = (",", "\uff0c", "\u3001", "\ufe50", "\ufe51", "\u060c", "\u201a", "\u2e41", "\u055d", "\u07f8", "\ua4fe")
# Frequent English function words: an English answer of a few words uses some (no single letters: "a" and "i"
# are words in other languages too).
_ENGLISH = frozenset(
    "the an and or of to on at for with is are was were be been it its this that these those as by from not you "
    "your we they he she can will has have had do does more most into than so but if all each which who what when "
    "how their our my also about there one many some other such may often".split()
)


def english(r: str) -> bool:
    """Whether a text reads as English: at least 5 % of its words are common English function words."""
    words = re.findall(r"[^\W\d_]+", r.lower())
    return bool(words) and sum(w in _ENGLISH for w in words) >= 0.05 * len(words)


def _lowercase(r: str) -> bool:
    """IFEval: every cased character is lowercase and there is at least one; and English (IFEval: langdetect)."""
    return r == r.lower() and r.islower() and english(r)


def _uppercase(r: str) -> bool:
    """IFEval: every cased character is uppercase and there is at least one; and English (IFEval: langdetect)."""
    return r == r.upper() and r.isupper() and english(r)


def _max_words(r: str, n: int) -> bool:
    """At most `n` words (IFEval's "less than" relation is strict; ours is inclusive, as described)."""
    return count_words(r) <= n


def _min_words(r: str, n: int) -> bool:
    """At least `n` words, of which at least n/4 distinct (stricter than IFEval: "the " x 80 is not 80 words)."""
    words = re.findall(r"\w+", r.lower())
    return len(words) >= n and len(set(words)) >= max(MIN_WORDS, n // 4)


def _include_keywords(r: str, keywords: list[str]) -> bool:
    """Each keyword occurs, case-insensitive. Whole words, where IFEval searches substrings."""
    return all(_word_pattern(k).search(r) for k in keywords)


def _avoid_keywords(r: str, keywords: list[str]) -> bool:
    """No keyword occurs as a whole word, case-insensitive (IFEval's forbidden words)."""
    return not any(_word_pattern(k).search(r) for k in keywords)


def _keyword_frequency(r: str, keyword: str, n: int) -> bool:
    """`keyword` occurs at least `n` times as a whole word (IFEval counts substrings)."""
    return count_occurrences(r, keyword) >= n


def _json_text(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k} {_json_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(_json_text(v) for v in value)
    return value if isinstance(value, str) else ""


def _json_format(r: str) -> bool:
    """IFEval: the whole response parses as JSON once an optional ```json fence is removed.

    Stricter: the value is an object or an array holding text (``42`` or ``{}`` is not an answer in JSON).
    """
    value = (
        r.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    return isinstance(parsed, dict | list) and count_words(_json_text(parsed)) >= MIN_WORDS


def _numbered_list(r: str, n: int) -> bool:
    """Exactly `n` lines start with ``1.``, ``2.``, ... in order, each item holding words (not in IFEval)."""
    items = re.findall(r"^[ \t]*(\d+)\.[ \t]+(.*)$", r, flags=re.MULTILINE)
    return [int(m) for m, _ in items] == list(range(1, n + 1)) and all(count_words(t) >= MIN_WORDS for _, t in items)


def _bullet_list(r: str, n: int) -> bool:
    """IFEval: exactly `n` lines start with ``*`` (not ``**``) or ``-``. Stricter: each item holds words."""
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    items = stars + dashes
    return len(items) == n and all(count_words(item) >= MIN_WORDS for item in items)


def _end_with(r: str, phrase: str) -> bool:
    """The response ends with `phrase` exactly, trailing whitespace ignored (IFEval also ignores case).

    Stricter: an answer comes before the phrase.
    """
    text = r.rstrip()
    return text.endswith(phrase) and count_words(text[: -len(phrase)]) >= MIN_WORDS


def _start_with(r: str, phrase: str) -> bool:
    """The response starts with `phrase` exactly, then whitespace and an answer (not in IFEval)."""
    text = r.lstrip()
    rest = text[len(phrase) :]
    return text.startswith(phrase) and rest[:1].isspace() and count_words(rest) >= MIN_WORDS


def _no_commas(r: str) -> bool:
    """IFEval: no comma anywhere. Stricter: no full-width, ideographic, Arabic or other script comma either."""
    return not any(c in r for c in COMMAS)


def _paragraphs(r: str, n: int) -> bool:
    """IFEval: exactly `n` paragraphs separated by ``***``; empty ones only allowed at either end.

    Stricter: every paragraph holds words.
    """
    parts = re.split(r"\s?\*\*\*\s?", r)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
        elif count_words(part) < MIN_WORDS:
            return False
    return count == n


def _title(r: str) -> bool:
    """IFEval: a non-empty title in double angular brackets, like <<poem of joy>>. Stricter: it holds a word."""
    return any(re.search(r"\w", t) for t in re.findall(r"<<([^\n]+)>>", r))


def _postscript(r: str, marker: str) -> bool:
    """A line starting with `marker` (case-insensitive, as IFEval) followed by text, in the final block.

    Stricter than IFEval, which accepts the marker anywhere: no blank line may follow the postscript's line, and
    an answer comes before it.
    """
    lines = r.rstrip().split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].lstrip()
        if line.lower().startswith(marker.lower()) and count_words(line[len(marker) :]) >= MIN_WORDS:
            before = "\n".join(lines[:i])
            return all(rest.strip() for rest in lines[i + 1 :]) and count_words(before) >= MIN_WORDS
    return False


def _placeholders(r: str, n: int) -> bool:
    """IFEval: at least `n` square-bracket placeholders like [name]. Stricter: each names something."""
    return len(re.findall(r"\[[^\[\]\n]*\w[^\[\]\n]*\]", r)) >= n


def _quotation(r: str) -> bool:
    """IFEval: the whole response is wrapped in double quotes. Stricter: with an answer inside."""
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"' and count_words(r[1:-1]) >= MIN_WORDS


def _sections(r: str, n: int) -> bool:
    """Exactly `n` lines starting ``SECTION 1`` ... ``SECTION n`` in order (IFEval asks for at least n), each
    section holding words after its header."""
    headers = list(re.finditer(r"^\s*SECTION (\d+)\b", r, flags=re.MULTILINE))
    if [int(m.group(1)) for m in headers] != list(range(1, n + 1)):
        return False
    ends = [m.start() for m in headers[1:]] + [len(r)]
    return all(count_words(r[m.end() : end]) >= MIN_WORDS for m, end in zip(headers, ends, strict=True))


def _highlights(r: str, n: int) -> bool:
    """IFEval's highlighted sections: at least `n` spans in single markdown stars, like *this part*.

    Stricter: a span holds words (IFEval counts any non-blank span, and ``**bold**`` too).
    """
    spans = re.findall(r"(?<!\*)\*([^\n\*]+)\*(?!\*)", r)
    return sum(count_words(s) >= MIN_WORDS for s in spans) >= n


def _repeat_request(r: str, request: str) -> bool:
    """IFEval's repeat_prompt: the answer starts with the request, word for word (case-insensitive), then an answer."""
    text = r.strip()
    return text.lower().startswith(request.strip().lower()) and count_words(text[len(request.strip()) :]) >= MIN_WORDS


def _capital_words(r: str, n: int) -> bool:
    """IFEval's capital_word_frequency ("at least"): at least `n` words written in capital letters (2+ letters)."""
    return sum(1 for w in re.findall(r"[^\W\d_]{2,}", r) if w.isupper()) >= n


def relevant(response: str, words: list[str]) -> bool:
    """Whether an answer is about its question: it uses one of the topic's words (keywords, title words).

    Not a constraint of the prompt: the scorer requires it for every verdict, so that no constant answer scores.
    """
    return any(_word_pattern(w).search(response) for w in words)


class Kind(NamedTuple):
    """A registered constraint kind: kwargs names, train wording, strict checker and test-only paraphrases."""

    params: tuple[str, ...]
    describe: Callable[..., str]
    check: Callable[..., bool]
    paraphrases: tuple[Callable[..., str], ...] = ()


KINDS: dict[str, Kind] = {
    "lowercase": Kind(
        (),
        lambda: "Your entire response must be in English and in lowercase letters; no capital letters are allowed.",
        _lowercase,
        (
            lambda: "Write your whole reply in English using only small letters, with no capitals anywhere.",
            lambda: "Please answer in English, and do not use a single uppercase letter.",
        ),
    ),
    "uppercase": Kind(
        (),
        lambda: "Your entire response must be in English and in all capital letters.",
        _uppercase,
        (
            lambda: "Write the whole reply in English using only CAPITAL letters.",
            lambda: "Every letter of your English answer has to be uppercase.",
        ),
    ),
    "max_words": Kind(
        ("n",),
        lambda n: f"Answer with at most {n} words.",
        _max_words,
        (lambda n: f"Keep your reply to {n} words or fewer.", lambda n: f"Do not go over {n} words in total."),
    ),
    "min_words": Kind(
        ("n",),
        lambda n: f"Answer with at least {n} words.",
        _min_words,
        (lambda n: f"Your reply should run to no fewer than {n} words.", lambda n: f"Write {n} words or more."),
    ),
    "include_keywords": Kind(
        ("keywords",),
        lambda keywords: f"Include the {_named('keyword', keywords, 'and')} in your response.",
        _include_keywords,
        (
            lambda keywords: f"Make sure to mention the {_named('word', keywords, 'and')} somewhere in your reply.",
            lambda keywords: f"Your answer has to use the {_named('term', keywords, 'and')}.",
        ),
    ),
    "avoid_keywords": Kind(
        ("keywords",),
        lambda keywords: f"Do not include the {_named('word', keywords, 'or')} in your response.",
        _avoid_keywords,
        (
            lambda keywords: f"Avoid the {_named('term', keywords, 'and')} completely in your reply.",
            lambda keywords: f"Never use the {_named('word', keywords, 'or')} when you answer.",
        ),
    ),
    "keyword_frequency": Kind(
        ("keyword", "n"),
        lambda keyword, n: f'In your response, the word "{keyword}" should appear at least {n} times.',
        _keyword_frequency,
        (
            lambda keyword, n: f'Use the word "{keyword}" {n} or more times in your reply.',
            lambda keyword, n: f'Mention "{keyword}" no fewer than {n} times.',
        ),
    ),
    "json_format": Kind(
        (),
        lambda: "Wrap your entire output in JSON format. You can use markdown ticks such as ```.",
        _json_format,
        (
            lambda: "Give the whole reply as a JSON object.",
            lambda: "Format everything you write as valid JSON.",
        ),
    ),
    "numbered_list": Kind(
        ("n",),
        lambda n: f"Answer with a numbered list of exactly {n} items, on lines starting 1., 2., and so on.",
        _numbered_list,
        (
            lambda n: f"Reply as a list numbered 1. to {n}. with exactly {n} entries.",
            lambda n: f"Give precisely {n} points, each on its own line and numbered like 1. and 2.",
        ),
    ),
    "bullet_list": Kind(
        ("n",),
        lambda n: f"Your answer must contain exactly {n} bullet points, each starting with * or -.",
        _bullet_list,
        (
            lambda n: f"Use exactly {n} bullet points in markdown (lines beginning with * or -).",
            lambda n: f"Lay out your reply as {n} markdown bullets, no more and no fewer.",
        ),
    ),
    "end_with": Kind(
        ("phrase",),
        lambda phrase: f'Finish your response with the exact phrase "{phrase}" and add nothing after it.',
        _end_with,
        (
            lambda phrase: f'The very last words of your reply must be "{phrase}"',
            lambda phrase: f'Close your answer with "{phrase}" and write nothing after that.',
        ),
    ),
    "start_with": Kind(
        ("phrase",),
        lambda phrase: f'Your response must start with the exact phrase "{phrase}"',
        _start_with,
        (
            lambda phrase: f'Open your reply with the words "{phrase}"',
            lambda phrase: f'Begin your answer with "{phrase}" exactly as written.',
        ),
    ),
    "no_commas": Kind(
        (),
        lambda: "In your entire response, refrain from the use of any commas.",
        _no_commas,
        (lambda: "Do not use a single comma anywhere in your reply.", lambda: "Write your answer without commas."),
    ),
    "paragraphs": Kind(
        ("n",),
        lambda n: f"There should be exactly {n} paragraphs, separated by the markdown divider ***.",
        _paragraphs,
        (
            lambda n: f"Split your reply into {n} paragraphs with a line of *** between each pair.",
            lambda n: f"Write exactly {n} paragraphs and put the markdown divider *** between them.",
        ),
    ),
    "title": Kind(
        (),
        lambda: "Include a title wrapped in double angular brackets, such as <<poem of joy>>.",
        _title,
        (
            lambda: "Give your reply a title inside double angle brackets, for example <<my title>>.",
            lambda: "Put a title at the top, written between << and >>.",
        ),
    ),
    "postscript": Kind(
        ("marker",),
        lambda marker: f"At the end of your response, add a postscript starting with {marker}",
        _postscript,
        (
            lambda marker: f"Finish with a short postscript that begins with {marker}",
            lambda marker: f"After your answer, add a final note starting with {marker}",
        ),
    ),
    "placeholders": Kind(
        ("n",),
        lambda n: f"Include at least {n} placeholders in square brackets, such as [address].",
        _placeholders,
        (
            lambda n: f"Leave {n} or more fill-in fields in square brackets, like [name].",
            lambda n: f"Your reply needs at least {n} bracketed placeholders such as [date].",
        ),
    ),
    "quotation": Kind(
        (),
        lambda: "Wrap your entire response with double quotation marks.",
        _quotation,
        (
            lambda: "Put your whole reply between double quotes.",
            lambda: "Enclose the entire answer in double quotation marks.",
        ),
    ),
    "sections": Kind(
        ("n",),
        lambda n: f"Your response must have exactly {n} sections, each marked SECTION X, such as SECTION 1.",
        _sections,
        (
            lambda n: f"Organise the reply into {n} parts headed SECTION 1, SECTION 2 and so on.",
            lambda n: (
                f"Divide your answer into exactly {n} sections, labelling each one SECTION followed by its number."
            ),
        ),
    ),
    # --- test-only kinds: never in train or dev (their wordings are all "paraphrases") ---
    "highlights": Kind(
        ("n",),
        lambda n: f"Highlight at least {n} parts of your answer with markdown, like *highlighted part*.",
        _highlights,
        (
            lambda n: f"Mark at least {n} passages in your reply as highlighted with single stars, as in *key point*.",
            lambda n: f"Emphasise {n} or more phrases by wrapping them in asterisks like *this*.",
        ),
    ),
    "repeat_request": Kind(
        ("request",),
        lambda request: "First repeat the request word for word without change, then give your answer.",
        _repeat_request,
        (
            lambda request: "Begin by copying the question exactly as it is written above, then answer it.",
            lambda request: "Start your reply by restating my question word for word; answer after that.",
        ),
    ),
    "capital_words": Kind(
        ("n",),
        lambda n: f"In your response, words with all capital letters should appear at least {n} times.",
        _capital_words,
        (
            lambda n: f"Write at least {n} words of your reply entirely in CAPITAL letters for emphasis.",
            lambda n: f"Use {n} or more fully capitalised words, LIKE THIS, in your answer.",
        ),
    ),
}
TEST_ONLY_KINDS = ("highlights", "repeat_request", "capital_words")
TRAIN_KINDS = tuple(k for k in KINDS if k not in TEST_ONLY_KINDS)


def describe(c: Constraint, paraphrase: int | None = None) -> str:
    """The instruction sentence for `c`: the train wording, or test paraphrase number `paraphrase`."""
    kind = KINDS[c.kind]
    wording = kind.describe if paraphrase is None else kind.paraphrases[paraphrase % len(kind.paraphrases)]
    return wording(**c.kwargs)


def check(response: str, c: Constraint) -> bool:
    """Strict check: does `response` follow `c`? An empty or blank response never does (as IFEval)."""
    return bool(response.strip()) and KINDS[c.kind].check(response, **c.kwargs)


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants: first/last/both lines removed, each with and without ``*``."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def check_loose(response: str, c: Constraint) -> bool:
    """IFEval's loose check: the strict check passes on any of `loose_variants(response)`."""
    return any(check(v, c) for v in loose_variants(response))
