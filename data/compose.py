"""Shape an answer from a topic's sentences so that it follows a set of constraints.

An answer is a selection of the topic's sentences laid out as the constraints ask (plain text, JSON, a list,
paragraphs, sections), decorated (title, start/end phrase, placeholder note, postscript), wrapped in quotes
and case-converted. The random choices that do not depend on length (`Style`, sentence order) are drawn once,
so answers with k and k+1 sentences differ only in that one sentence: that is what lets the builder meet word
limits and make near misses. Length constraints (max_words, min_words) are not handled here: the builder picks
the number of sentences.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

from orpo_deploy.data.topics import Topic
from orpo_deploy.data.verifiers import Constraint, count_occurrences

START_PHRASES = ("Sure.", "Good question.", "Here is a short answer.", "Let me explain.")
END_PHRASES = (
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "I hope this helps.",
    "Any other questions?",
)
POSTSCRIPT_MARKERS = ("P.S.", "P.P.S.")
# The test split's out-of-template rows draw phrases and markers from these lists, never used in train or dev.
NOVEL_START_PHRASES = ("Of course.", "Happy to help.", "Great question.")
NOVEL_END_PHRASES = ("That is all for now.", "Thanks for reading.", "Hope that answers it.")
NOVEL_POSTSCRIPT_MARKERS = ("PS:", "Note:")
_POSTSCRIPTS = (
    "I am happy to go into more detail if you would like.",
    "There is much more to discover about this subject.",
    "Feel free to ask a follow-up question.",
)
_LIST_INTROS = ("", "Here are the key points:", "In brief:", "Here is a quick summary:")
# Notes with exactly n placeholders, for the placeholders constraint.
PLACEHOLDER_NOTES = {
    1: ("Feel free to share this with [name].", "Adapt this summary for [audience] as needed."),
    2: ("Prepared for [name] on [date].", "Shared with [name] at [organization]."),
    3: ("Prepared by [author] for [name] on [date].", "Shared with [name] at [organization] on [date]."),
    4: (
        "Prepared by [author] for [name] at [organization] on [date].",
        "Sent from [city] to [name] at [address] on [date].",
    ),
}
LAYOUTS = ("json_format", "numbered_list", "bullet_list", "paragraphs", "sections")
LENGTH_KINDS = ("max_words", "min_words")


class Infeasible(Exception):
    """The topic cannot support this combination of constraints (too few suitable sentences)."""


@dataclass(frozen=True)
class Style:
    """Presentation choices drawn once per pair, so the chosen answer and its near misses look alike."""

    order: tuple[int, ...]  # the order in which the topic's sentences are used
    intro: str  # a line before a list, or ""
    bullet: str
    json_fence: bool
    json_indent: int | None
    two_paragraphs: bool  # plain answers of 4+ sentences as two blank-line separated paragraphs
    postscript: str
    note: int  # which placeholder note


def draw_style(topic: Topic, rng: random.Random) -> Style:
    """Draw how one answer looks; its lead sentence stays first 60% of the time (always if ordered)."""
    n = len(topic.sentences)
    rest = rng.sample(range(1, n), n - 1)
    order = [0, *rest] if rng.random() < 0.6 else rng.sample(range(n), n)
    if topic.ordered:
        order = list(range(n))
    return Style(
        order=tuple(order),
        intro=rng.choice(_LIST_INTROS),
        bullet=rng.choice("*-"),
        json_fence=rng.random() < 0.3,
        json_indent=rng.choice((None, 2)),
        two_paragraphs=rng.random() < 0.4,
        postscript=rng.choice(_POSTSCRIPTS),
        note=rng.randrange(2),
    )


def without_commas(sentence: str) -> str | None:
    """Rephrase a sentence without commas, or None. A short list "a, b and c" becomes "a and b and c"."""
    s = re.sub(r"(\d),(\d{3})", r"\1\2", sentence)
    if "," not in s:
        return s
    m = re.search(r", [^,]* (and|or) ", s)
    if s.count(",") > 1 or not m:
        return None  # "a and b and c and d" reads badly: leave such sentences out
    return s.replace(", ", f" {m.group(1)} ")


def _pool(topic: Topic, cs: dict[str, Constraint], order: tuple[int, ...]) -> tuple[list[str], list[int]]:
    """Usable sentences in `order`, and the positions that must be kept (keywords) in that list."""
    pool = [topic.sentences[i] for i in order]
    if "no_commas" in cs:
        pool = [s for s in map(without_commas, pool) if s is not None]
    if "avoid_keywords" in cs:
        banned = cs["avoid_keywords"].kwargs["keywords"]
        pool = [s for s in pool if not any(count_occurrences(s, k) for k in banned)]
    required: list[int] = []
    for k in cs["include_keywords"].kwargs["keywords"] if "include_keywords" in cs else ():
        hits = [i for i, s in enumerate(pool) if count_occurrences(s, k)]
        if not hits:
            raise Infeasible(f"no usable sentence contains {k!r}")
        required.append(hits[0])
    if "keyword_frequency" in cs:
        word, n = cs["keyword_frequency"].kwargs["keyword"], cs["keyword_frequency"].kwargs["n"]
        total = 0
        for i, s in enumerate(pool):
            if total < n and count_occurrences(s, word):
                required.append(i)
                total += count_occurrences(s, word)
        if total < n:
            raise Infeasible(f"{word!r} occurs fewer than {n} times")
    return pool, sorted(set(required))


def sentence_range(topic: Topic, constraints: list[Constraint], style: Style) -> tuple[int, int]:
    """The smallest and largest number of sentences an answer can have; raise Infeasible if none."""
    cs = {c.kind: c for c in constraints}
    pool, required = _pool(topic, cs, style.order)
    low, high = max(2, len(required)), len(pool)
    for kind in ("numbered_list", "bullet_list"):
        if kind in cs:
            low = high = cs[kind].kwargs["n"] if len(pool) >= cs[kind].kwargs["n"] >= len(required) else -1
    for kind in ("paragraphs", "sections", "highlights"):
        if kind in cs:
            low = max(low, cs[kind].kwargs["n"])
    if low < 0 or low > high:
        raise Infeasible("too few usable sentences")
    return low, high


def _groups(items: list[str], n: int) -> list[list[str]]:
    """Split items into n consecutive groups whose sizes differ by at most one."""
    size, extra = divmod(len(items), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(n)]


def _case(text: str, cs: dict[str, Constraint]) -> str:
    if "lowercase" in cs:
        return text.lower()
    return text.upper() if "uppercase" in cs else text


def render(topic: Topic, constraints: list[Constraint], style: Style, k: int) -> str:
    """The answer with k sentences that follows every non-length constraint in `constraints`.

    Raises Infeasible when k is outside `sentence_range`. The builder checks the result with the verifiers.
    """
    cs = {c.kind: c for c in constraints}
    low, high = sentence_range(topic, constraints, style)
    if not low <= k <= high:
        raise Infeasible(f"{k} sentences is outside {low}..{high}")
    pool, required = _pool(topic, cs, style.order)
    others = [i for i in range(len(pool)) if i not in required]
    sentences = [pool[i] for i in sorted(required + others[: k - len(required)])]
    if "highlights" in cs:  # the first n sentences in single stars, like *this sentence.*
        n = cs["highlights"].kwargs["n"]
        sentences = [f"*{x}*" if i < n else x for i, x in enumerate(sentences)]
    if "capital_words" in cs:
        sentences = _capitalise_words(sentences, cs["capital_words"].kwargs["n"])

    if "json_format" in cs:
        text = json.dumps({"topic": topic.title, "answer": " ".join(sentences)}, indent=style.json_indent)
        return _case(f"```json\n{text}\n```" if style.json_fence else text, cs)

    # parts: blocks joined by `sep`; `prose` says whether a phrase can join the first/last block on its line.
    if "numbered_list" in cs or "bullet_list" in cs:
        marks = [f"{i}." for i in range(1, k + 1)] if "numbered_list" in cs else [style.bullet] * k
        lines = [f"{m} {s}" for m, s in zip(marks, sentences, strict=True)]
        parts, sep, prose = ["\n".join([style.intro, *lines] if style.intro else lines)], "", False
    elif "paragraphs" in cs:
        parts = [" ".join(g) for g in _groups(sentences, cs["paragraphs"].kwargs["n"])]
        sep, prose = "\n\n***\n\n", True
    elif "sections" in cs:
        groups = _groups(sentences, cs["sections"].kwargs["n"])
        parts, sep, prose = [f"SECTION {i}\n" + " ".join(g) for i, g in enumerate(groups, 1)], "\n\n", False
    elif style.two_paragraphs and k >= 4:
        parts, sep, prose = [" ".join(sentences[: k // 2]), " ".join(sentences[k // 2 :])], "\n\n", True
    else:
        parts, sep, prose = [" ".join(sentences)], "", True

    if "start_with" in cs:
        parts[0] = cs["start_with"].kwargs["phrase"] + (" " if prose else "\n") + parts[0]
    if "placeholders" in cs:
        notes = PLACEHOLDER_NOTES[cs["placeholders"].kwargs["n"]]
        parts[-1] += "\n\n" + notes[style.note % len(notes)]
        prose = False
    if "postscript" in cs:
        parts[-1] += f"\n\n{cs['postscript'].kwargs['marker']} {style.postscript}"
    if "end_with" in cs:
        parts[-1] += (" " if prose else "\n\n") + cs["end_with"].kwargs["phrase"]
    text = sep.join(parts)
    if "title" in cs:
        text = f"<<{topic.title}>>\n\n{text}"
    if "repeat_request" in cs:
        text = cs["repeat_request"].kwargs["request"] + "\n\n" + text
    if "quotation" in cs:
        text = f'"{text}"'
    return _case(text, cs)


def _capitalise_words(sentences: list[str], n: int) -> list[str]:
    """Write the first `n` words of five or more letters in capitals (emphasis, for the capital_words kind)."""
    out, left = [], n
    for sentence in sentences:

        def upper(m: re.Match[str]) -> str:
            nonlocal left
            if left > 0 and not m.group().isupper():
                left -= 1
                return m.group().upper()
            return m.group()

        out.append(re.sub(r"\b[A-Za-z]{5,}\b", upper, sentence))
    if left > 0:
        raise Infeasible(f"fewer than {n} long words to capitalise")
    return out


def natural_answer(topic: Topic, rng: random.Random) -> str:
    """A plain, unconstrained answer of 3-5 sentences, as a model would give without instructions."""
    style = draw_style(topic, rng)
    return render(topic, [], style, rng.randint(3, min(5, len(topic.sentences))))
