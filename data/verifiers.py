"""Verifiable instructions in the style of IFEval (Zhou et al., 2023, arXiv:2311.07911).

Each constraint kind has an instruction sentence (`describe`) and a strict checker (`check`). `check_loose` is
IFEval's loose mode: the strict check passes on any of eight variants of the response (first and/or last line
removed, markdown ``*`` removed), as in google-research ``instruction_following_eval/evaluation_lib.py``.

Where a kind also exists in IFEval its check follows IFEval's code, except where a checker's docstring says.
Words are counted like IFEval's nltk ``RegexpTokenizer(r"\\w+")``, here with the stdlib ``re``.
Everything is pure and uses the standard library only.
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


def _lowercase(r: str) -> bool:
    """IFEval: every cased character is lowercase and there is at least one."""
    return r == r.lower() and r.islower()


def _uppercase(r: str) -> bool:
    """IFEval: every cased character is uppercase and there is at least one."""
    return r == r.upper() and r.isupper()


def _max_words(r: str, n: int) -> bool:
    """At most `n` words (IFEval's "less than" relation is strict; ours is inclusive, as described)."""
    return count_words(r) <= n


def _min_words(r: str, n: int) -> bool:
    """At least `n` words (IFEval's "at least")."""
    return count_words(r) >= n


def _include_keywords(r: str, keywords: list[str]) -> bool:
    """Each keyword occurs, case-insensitive. Whole words, where IFEval searches substrings."""
    return all(_word_pattern(k).search(r) for k in keywords)


def _avoid_keywords(r: str, keywords: list[str]) -> bool:
    """No keyword occurs as a whole word, case-insensitive (IFEval's forbidden words)."""
    return not any(_word_pattern(k).search(r) for k in keywords)


def _keyword_frequency(r: str, keyword: str, n: int) -> bool:
    """`keyword` occurs at least `n` times as a whole word (IFEval counts substrings)."""
    return count_occurrences(r, keyword) >= n


def _json_format(r: str) -> bool:
    """IFEval: the whole response parses as JSON once an optional ```json fence is removed."""
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
        json.loads(value)
    except ValueError:
        return False
    return True


def _numbered_list(r: str, n: int) -> bool:
    """Exactly `n` lines start with ``1.``, ``2.``, ... in order (not in IFEval)."""
    numbers = [int(m) for m in re.findall(r"^\s*(\d+)\.\s", r, flags=re.MULTILINE)]
    return numbers == list(range(1, n + 1))


def _bullet_list(r: str, n: int) -> bool:
    """IFEval: exactly `n` lines start with ``*`` (not ``**``) or ``-``."""
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == n


def _end_with(r: str, phrase: str) -> bool:
    """The response ends with `phrase` exactly, trailing whitespace ignored (IFEval also ignores case)."""
    return r.rstrip().endswith(phrase)


def _start_with(r: str, phrase: str) -> bool:
    """The response starts with `phrase` exactly, leading whitespace ignored (not in IFEval)."""
    return r.lstrip().startswith(phrase)


def _no_commas(r: str) -> bool:
    """IFEval: no comma anywhere."""
    return "," not in r


def _paragraphs(r: str, n: int) -> bool:
    """IFEval: exactly `n` paragraphs separated by ``***``; empty ones only allowed at either end."""
    parts = re.split(r"\s?\*\*\*\s?", r)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == n


def _title(r: str) -> bool:
    """IFEval: a non-empty title in double angular brackets, like <<poem of joy>>."""
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _postscript(r: str, marker: str) -> bool:
    """A line starting with `marker` (case-insensitive, as IFEval) followed by text, in the final block.

    Stricter than IFEval, which accepts the marker anywhere: no blank line may follow the postscript's line.
    """
    lines = r.rstrip().split("\n")
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].lstrip()
        if line.lower().startswith(marker.lower()) and line[len(marker) :].strip():
            return all(rest.strip() for rest in lines[i + 1 :])
    return False


def _placeholders(r: str, n: int) -> bool:
    """IFEval: at least `n` square-bracket placeholders like [name]."""
    return len(re.findall(r"\[.*?\]", r)) >= n


def _quotation(r: str) -> bool:
    """IFEval: the whole response is wrapped in double quotes."""
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


def _sections(r: str, n: int) -> bool:
    """Exactly `n` lines starting ``SECTION 1`` ... ``SECTION n`` in order (IFEval asks for at least n)."""
    numbers = [int(m) for m in re.findall(r"^\s*SECTION (\d+)\b", r, flags=re.MULTILINE)]
    return numbers == list(range(1, n + 1))


class Kind(NamedTuple):
    """A registered constraint kind: its kwargs names, instruction template and strict checker."""

    params: tuple[str, ...]
    describe: Callable[..., str]
    check: Callable[..., bool]


KINDS: dict[str, Kind] = {
    "lowercase": Kind(
        (),
        lambda: "Your entire response must be in lowercase letters; no capital letters are allowed.",
        _lowercase,
    ),
    "uppercase": Kind(
        (),
        lambda: "Your entire response must be in English and in all capital letters.",
        _uppercase,
    ),
    "max_words": Kind(("n",), lambda n: f"Answer with at most {n} words.", _max_words),
    "min_words": Kind(("n",), lambda n: f"Answer with at least {n} words.", _min_words),
    "include_keywords": Kind(
        ("keywords",),
        lambda keywords: f"Include the {_named('keyword', keywords, 'and')} in your response.",
        _include_keywords,
    ),
    "avoid_keywords": Kind(
        ("keywords",),
        lambda keywords: f"Do not include the {_named('word', keywords, 'or')} in your response.",
        _avoid_keywords,
    ),
    "keyword_frequency": Kind(
        ("keyword", "n"),
        lambda keyword, n: f'In your response, the word "{keyword}" should appear at least {n} times.',
        _keyword_frequency,
    ),
    "json_format": Kind(
        (),
        lambda: "Wrap your entire output in JSON format. You can use markdown ticks such as ```.",
        _json_format,
    ),
    "numbered_list": Kind(
        ("n",),
        lambda n: f"Answer with a numbered list of exactly {n} items, on lines starting 1., 2., and so on.",
        _numbered_list,
    ),
    "bullet_list": Kind(
        ("n",),
        lambda n: f"Your answer must contain exactly {n} bullet points, each starting with * or -.",
        _bullet_list,
    ),
    "end_with": Kind(
        ("phrase",),
        lambda phrase: f'Finish your response with the exact phrase "{phrase}" and add nothing after it.',
        _end_with,
    ),
    "start_with": Kind(
        ("phrase",),
        lambda phrase: f'Your response must start with the exact phrase "{phrase}"',
        _start_with,
    ),
    "no_commas": Kind((), lambda: "In your entire response, refrain from the use of any commas.", _no_commas),
    "paragraphs": Kind(
        ("n",),
        lambda n: f"There should be exactly {n} paragraphs, separated by the markdown divider ***.",
        _paragraphs,
    ),
    "title": Kind(
        (),
        lambda: "Include a title wrapped in double angular brackets, such as <<poem of joy>>.",
        _title,
    ),
    "postscript": Kind(
        ("marker",),
        lambda marker: f"At the end of your response, add a postscript starting with {marker}",
        _postscript,
    ),
    "placeholders": Kind(
        ("n",),
        lambda n: f"Include at least {n} placeholders in square brackets, such as [address].",
        _placeholders,
    ),
    "quotation": Kind((), lambda: "Wrap your entire response with double quotation marks.", _quotation),
    "sections": Kind(
        ("n",),
        lambda n: f"Your response must have exactly {n} sections, each marked SECTION X, such as SECTION 1.",
        _sections,
    ),
}


def describe(c: Constraint) -> str:
    """The instruction sentence for `c`, to append to a base prompt."""
    return KINDS[c.kind].describe(**c.kwargs)


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
