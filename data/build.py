"""Build the IFEval-style preference splits, deterministically, from the hand-written topics.

    python -m orpo_deploy.data.build            # write data/splits/*.jsonl
    python -m orpo_deploy.data.build --check    # exit 1 if the committed files differ from a fresh build

Topics (not prompts) are split 70/10/20 into train, dev and test, per domain. Each base prompt gets several
constrained variants; chosen follows every constraint (asserted with the verifiers) and is about its topic
(`relevant`, asserted); rejected fails at least one, strictly and loosely (asserted). Same seed, same bytes: one
`random.Random` per split, no clock, no set iteration.

Dataset v2: dev is drawn like train (same kinds, wordings, values) from its own topics, for every choice of
recipe, steps or checkpoint. Test keeps v1's held-out topics and has two kinds of rows: "in" template (train's
kinds, wordings and values) and "out" of template (paraphrased wordings never in train, novel phrases and
n-values, and the test-only kinds). Reports give the two separately.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
import sys
from collections import Counter
from pathlib import Path

from orpo_deploy.core.io import write_atomic
from orpo_deploy.data.compose import LENGTH_KINDS, Infeasible, draw_style, render, sentence_range
from orpo_deploy.data.rejections import Shaped, natural_answers, near_misses, off_topic_answers, vague_answers
from orpo_deploy.data.sampling import sample_constraints
from orpo_deploy.data.splits import SPLITS_DIR
from orpo_deploy.data.topics import Topic, load_topics
from orpo_deploy.data.verifiers import (
    KINDS,
    TRAIN_KINDS,
    Constraint,
    check,
    check_loose,
    count_occurrences,
    count_words,
    describe,
    relevant,
)

logger = logging.getLogger(__name__)

SEED = 20240611
VERSION = 2
TEST_PER_DOMAIN = 2  # of 10 topics per domain: ~20% of topics held out (the same topics as dataset v1)
DEV_PER_DOMAIN = 1  # of the 8 others: ~10% for dev
# Rows per base prompt (a topic's first and second prompt): (in-template, out-of-template) variants.
VARIANTS = {"train": ((10, 0), (9, 0)), "dev": ((5, 0), (5, 0)), "test": ((3, 7), (3, 7))}
P_SECOND = 0.3  # share of prompts with two constraints
REJECTION_WEIGHTS = {"natural": 50, "near_miss": 35, "off_topic": 10, "vague": 5}
_WORD_LIMITS = ((20, 30, 40, 50, 60, 80, 100, 120, 150), (25, 35, 45, 70, 90, 110, 130))  # familiar, novel


def split_topics(topics: list[Topic], rng: random.Random) -> dict[str, list[Topic]]:
    """Hold out TEST_PER_DOMAIN topics of every domain for test (drawn as v1 drew them), then DEV_PER_DOMAIN of
    the rest for dev (from a generator of its own, so the test topics stay v1's); the rest is train."""
    test_ids, dev_ids = [], []
    for domain in sorted({t.domain for t in topics}):
        ids = sorted(t.id for t in topics if t.domain == domain)
        test_ids += rng.sample(ids, TEST_PER_DOMAIN)
    dev_rng = random.Random(rng.random())
    for domain in sorted({t.domain for t in topics}):
        ids = sorted(t.id for t in topics if t.domain == domain and t.id not in test_ids)
        dev_ids += dev_rng.sample(ids, DEV_PER_DOMAIN)
    return {
        "train": [t for t in topics if t.id not in test_ids and t.id not in dev_ids],
        "dev": [t for t in topics if t.id in dev_ids],
        "test": [t for t in topics if t.id in test_ids],
    }


@functools.cache
def _word_topics() -> dict[str, int]:
    """How many topics use each word (5+ letters) in their sentences."""
    counts: Counter[str] = Counter()
    for t in load_topics():
        counts.update({w.lower() for s in t.sentences for w in re.findall(r"[A-Za-z]{5,}", s)})
    return dict(counts)


def relevance_words(topic: Topic, constraints: list[Constraint]) -> list[str]:
    """Words an answer about `topic` uses at least one of: its keywords, title words and the words (5+ letters)
    of its sentences that no other topic uses; minus the words it must avoid."""
    banned = {k for c in constraints if c.kind == "avoid_keywords" for k in c.kwargs["keywords"]}
    title = [w.lower() for w in re.findall(r"[A-Za-z]{4,}", topic.title)]
    own = sorted({w.lower() for s in topic.sentences for w in re.findall(r"[A-Za-z]{5,}", s)})
    words = dict.fromkeys([*topic.keywords, *title, *(w for w in own if _word_topics().get(w) == 1)])
    return [w for w in words if not any(count_occurrences(w, b) for b in banned)]


def shape_chosen(topic: Topic, constraints: list[Constraint], rng: random.Random, novel: bool = False) -> Shaped:
    """The chosen answer: render the non-length constraints, then pick a word limit and a sentence count."""
    style = draw_style(topic, rng)
    plain = [c for c in constraints if c.kind not in LENGTH_KINDS]
    low, high = sentence_range(topic, plain, style)
    words = {k: count_words(render(topic, plain, style, k)) for k in range(low, high + 1)}
    length = next((c for c in constraints if c.kind in LENGTH_KINDS), None)
    if length is None:
        k = rng.randint(min(max(low, 3), high), max(low, min(high, 6)))
    elif length.kind == "max_words":  # a limit the longest answer breaks, from the tighter half
        limits = _WORD_LIMITS[novel]
        options = [n for n in limits if words[low] <= n < words[high]]
        options = options[: (len(options) + 1) // 2] or [n for n in limits if n >= words[low]][:1]
        if not options:
            raise Infeasible("shortest answer is too long for any word limit")
        n = rng.choice(options)
        k = max(k for k in words if words[k] <= n)
    else:  # min_words: a floor the shortest answer misses, from the higher half
        limits = _WORD_LIMITS[novel]
        options = [n for n in limits if words[low] < n <= words[high]]
        options = options[len(options) // 2 :] or [n for n in limits if n <= words[high]][-1:]
        if not options:
            raise Infeasible("longest answer is too short for any word floor")
        n = rng.choice(options)
        k = min(k for k in words if words[k] >= n)
    if length is not None:
        constraints = [Constraint(c.kind, {"n": n}) if c is length else c for c in constraints]
    text = render(topic, plain, style, k)
    failed = [c.kind for c in constraints if not check(text, c)]
    if not relevant(text, relevance_words(topic, constraints)):
        failed.append("relevance")
    if failed:  # a bug in compose or in the topics, never data to emit
        raise AssertionError(f"chosen answer for {topic.id} fails {failed}:\n{text}")
    return Shaped(topic, constraints, style, k, text)


def pick_rejected(chosen: Shaped, others: list[Topic], rng: random.Random) -> tuple[str, str]:
    """A rejected answer and its kind; it fails a constraint strictly and, if any candidate can, loosely."""
    first = rng.choices(list(REJECTION_WEIGHTS), weights=list(REJECTION_WEIGHTS.values()))[0]
    order = [first] + [m for m in ("near_miss", "natural", "off_topic", "vague") if m != first]
    cs = chosen.constraints
    strict_only: tuple[str, str] | None = None
    for mode in order:
        if mode == "natural":
            candidates = natural_answers(chosen.topic, rng)
        elif mode == "near_miss":
            candidates = [a for c in rng.sample(cs, len(cs)) for a in near_misses(chosen, c, rng)]
        elif mode == "off_topic":
            candidates = off_topic_answers(chosen.topic, others, rng)
        else:
            candidates = vague_answers(rng)
        for text in candidates:
            if text == chosen.text or all(check(text, c) for c in cs):
                continue
            if not all(check_loose(text, c) for c in cs):
                return text, mode
            strict_only = strict_only or (text, mode)
    if strict_only is None:
        raise AssertionError(f"no rejected answer fails {[c.kind for c in cs]} for {chosen.topic.id}")
    return strict_only


def make_row(
    topic: Topic, base_prompt: str, primary: str, others: list[Topic], rng: random.Random, novel: bool = False
) -> dict:
    """One preference pair with metadata. Raises Infeasible if the topic cannot support the constraints.

    ``novel`` (the test split's out-of-template rows): any kind, novel values and phrases, paraphrased wordings.
    """
    kinds = list(KINDS) if novel else list(TRAIN_KINDS)
    constraints = sample_constraints(primary, topic, rng, P_SECOND, kinds, base_prompt, novel)
    chosen = shape_chosen(topic, constraints, rng, novel)
    rejected, rejection = pick_rejected(chosen, others, rng)
    wordings = [
        describe(c, rng.randrange(len(KINDS[c.kind].paraphrases)) if novel else None) for c in chosen.constraints
    ]
    return {
        "prompt": " ".join([base_prompt, *wordings]),
        "chosen": chosen.text,
        "rejected": rejected,
        "topic": topic.id,
        "base_prompt": base_prompt,
        "constraints": [c.to_dict() for c in chosen.constraints],
        "rejection": rejection,
        "template": "out" if novel else "in",
        "relevance": relevance_words(topic, chosen.constraints),
    }


def build_split(name: str, topics: list[Topic], rng: random.Random) -> list[dict]:
    """All rows of one split. Every base prompt cycles through the kinds in its own random order."""
    rows: list[dict] = []
    prompts: set[str] = set()
    for topic in topics:
        for base_prompt, counts in zip(topic.prompts, VARIANTS[name], strict=True):
            for novel, wanted in zip((False, True), counts, strict=True):
                pool = list(KINDS) if novel else list(TRAIN_KINDS)
                kinds = rng.sample(pool, len(pool))
                made = tries = 0
                while made < wanted:
                    if tries == 4 * len(pool):
                        raise RuntimeError(f"could not make {wanted} pairs for {base_prompt!r}")
                    primary, tries = kinds[tries % len(kinds)], tries + 1
                    try:
                        row = make_row(topic, base_prompt, primary, topics, rng, novel)
                    except Infeasible:
                        continue
                    if row["prompt"] not in prompts:
                        prompts.add(row["prompt"])
                        rows.append({"id": f"{name}-{len(rows):05d}", **row})
                        made += 1
    return rows


def conversational(row: dict) -> dict:
    """The same pair in trl's conversational format."""
    return {
        **row,
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def build(seed: int = SEED) -> dict[str, bytes]:
    """File name -> exact bytes of every split file."""
    rng = random.Random(seed)
    topics = load_topics()
    files = {}
    for name, split in split_topics(topics, rng).items():
        rows = build_split(name, split, random.Random(f"{seed}-{name}"))
        for suffix, convert in (("", dict), ("_conversational", conversational)):
            lines = (json.dumps(convert(r), sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
            files[f"{name}{suffix}.jsonl"] = "".join(lines).encode("utf-8")
        kinds = Counter(c["kind"] for r in rows for c in r["constraints"])
        mix = dict(Counter(r["rejection"] for r in rows))
        logger.info("%s: %d pairs from %d topics; rejections %s", name, len(rows), len(split), mix)
        logger.debug("%s kinds: %s", name, dict(kinds))
    return files


def _differs(path: Path, data: bytes) -> bool:
    return not path.is_file() or path.read_bytes() != data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orpo_deploy.data.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SPLITS_DIR, help="folder for the split files")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed; the splits use the default")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        files = build(args.seed)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        stale = [name for name, data in files.items() if _differs(args.out / name, data)]
        if stale:
            msg = f"{', '.join(stale)} in {args.out} differ from a fresh build; run python -m orpo_deploy.data.build"
            print(f"error: {msg}", file=sys.stderr)
            return 1
        logger.info("%s matches a fresh build", args.out)
        return 0
    for name, data in files.items():
        write_atomic(args.out / name, data)
    logger.info("wrote %s", ", ".join(str(args.out / n) for n in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
