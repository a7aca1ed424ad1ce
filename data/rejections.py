"""Candidate rejected answers: natural (unconstrained), near misses of one constraint, off-topic and vague."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from orpo_deploy.data.compose import END_PHRASES, LENGTH_KINDS, START_PHRASES, Infeasible, Style, natural_answer, render
from orpo_deploy.data.topics import Topic
from orpo_deploy.data.verifiers import Constraint

VAGUE_REPLIES = (
    "That is a good question. It depends on many different factors and the answer can vary a lot. "
    "You may want to look it up.",
    "I am not sure about that one. There are many opinions on this topic and it is hard to say.",
    "It is complicated. Different sources say different things, so it is best to do your own research.",
    "Well, there is a lot to say about this. Some people think one thing and others think another.",
)
_FILLER = "This is a common question and the answer is well established."


@dataclass(frozen=True)
class Shaped:
    """A chosen answer and how it was made: enough to re-render it with one constraint changed."""

    topic: Topic
    constraints: list[Constraint]  # all of them, length kinds with their final n
    style: Style
    k: int  # number of topic sentences used
    text: str


def _rerender(s: Shaped, kind: str, new: Constraint | None, k: int | None = None) -> str | None:
    """The answer with constraint `kind` replaced by `new` (or dropped), or None if that is infeasible."""
    others = [c for c in s.constraints if c.kind != kind and c.kind not in LENGTH_KINDS]
    try:
        return render(s.topic, others + ([new] if new else []), s.style, s.k if k is None else k)
    except Infeasible:
        return None


def _flip_word(text: str, pattern: str, rng: random.Random) -> str | None:
    """Change the case of one word matching `pattern`, away from the first and last line if possible."""
    lines = text.split("\n")
    inner = "\n".join(lines[1:-1]) if len(lines) > 2 else text
    offset = len(lines[0]) + 1 if len(lines) > 2 else 0
    words = list(re.finditer(pattern, inner))
    if not words:
        return None
    m = rng.choice(words)
    flipped = m.group().capitalize() if m.group().islower() else m.group().lower()
    return text[: offset + m.start()] + flipped + text[offset + m.end() :]


def _add_comma(text: str) -> str | None:
    m = re.search(r" (and|but|so|which|because|while) ", text)
    return text[: m.start()] + "," + text[m.start() :] if m else None


def near_misses(s: Shaped, c: Constraint, rng: random.Random) -> list[str]:
    """Answers like `s.text` that miss constraint `c`, most similar first (some may miss others too)."""
    t, kw = s.text, c.kwargs
    out: list[str | None] = []
    if c.kind == "lowercase":
        out = [_flip_word(t, r"\b[a-z]{3,}\b", rng)]
    elif c.kind == "uppercase":
        out = [_flip_word(t, r"\b[A-Z]{3,}\b", rng)]
    elif c.kind == "max_words":
        out = [_rerender(s, c.kind, None, s.k + 1), t + " " + _FILLER, t + " " + _FILLER + " " + _FILLER]
    elif c.kind == "min_words":
        out = [_rerender(s, c.kind, None, k) for k in range(s.k - 1, 1, -1)]
    elif c.kind == "include_keywords":
        out = [_rerender(s, c.kind, Constraint("avoid_keywords", kw))]
    elif c.kind == "avoid_keywords":
        out = [_rerender(s, c.kind, Constraint("include_keywords", kw))]
        out.append(out[0].replace("\n\n", " ") if out[0] else None)  # one paragraph: fails loosely too
    elif c.kind == "keyword_frequency":
        fewer = Constraint(c.kind, {**kw, "n": kw["n"] - 1}) if kw["n"] > 1 else None
        out = [
            _rerender(s, c.kind, fewer),
            _rerender(s, c.kind, Constraint("avoid_keywords", {"keywords": [kw["keyword"]]})),
        ]
    elif c.kind in ("numbered_list", "bullet_list", "paragraphs", "sections"):
        is_list = c.kind in ("numbered_list", "bullet_list")
        for n in (kw["n"] - 1, kw["n"] + 1) if rng.random() < 0.5 else (kw["n"] + 1, kw["n"] - 1):
            if n >= 1:
                out.append(_rerender(s, c.kind, Constraint(c.kind, {"n": n}), n if is_list else None))
        out.append(t.replace("\n\n***\n\n", "\n\n") if c.kind == "paragraphs" else None)
        out.append(t.replace("SECTION ", "Section ") if c.kind == "sections" else None)
    elif c.kind == "json_format":
        i = t.rindex("}")
        out = [t[:i] + t[i + 1 :], t.replace('"', "'")]
    elif c.kind == "end_with":
        other = rng.choice([p for p in END_PHRASES if p != kw["phrase"]])
        out = [t.rstrip() + " Have a nice day.", t.rstrip().removesuffix(kw["phrase"]) + other]
    elif c.kind == "start_with":
        other = rng.choice([p for p in START_PHRASES if p != kw["phrase"]])
        out = [other + t.lstrip().removeprefix(kw["phrase"]), "Hello! " + t]
    elif c.kind == "no_commas":
        out = [_add_comma(t), _rerender(s, c.kind, None)]
    elif c.kind == "title":
        out = [t.replace("<<", "# ", 1).replace(">>", "", 1), t.replace("<<", "").replace(">>", "")]
    elif c.kind == "postscript":
        i = t.rindex(kw["marker"])
        out = [
            t[:i].rstrip() + ('"' if t.endswith('"') else ""),
            t[:i] + "Note:" + t[i + len(kw["marker"]) :],
        ]
    elif c.kind == "placeholders":
        fewer = Constraint(c.kind, {"n": kw["n"] - 1}) if kw["n"] > 1 else None
        out = [_rerender(s, c.kind, fewer), t.replace("[", "(").replace("]", ")")]
    elif c.kind == "quotation":
        out = [t.rstrip()[:-1], "'" + t.strip()[1:-1] + "'"]
    return [x for x in out if x]


def natural_answers(topic: Topic, rng: random.Random) -> list[str]:
    """Two plain answers as a model might give them, ignoring the instructions."""
    return [natural_answer(topic, rng) for _ in range(2)]


def off_topic_answers(topic: Topic, others: list[Topic], rng: random.Random) -> list[str]:
    """Plain answers about other topics (of the same split, so no test content leaks into train)."""
    return [natural_answer(rng.choice([o for o in others if o.id != topic.id]), rng) for _ in range(2)]


def vague_answers(rng: random.Random) -> list[str]:
    """Unhelpful replies that say nothing about the question."""
    return rng.sample(VAGUE_REPLIES, len(VAGUE_REPLIES))
