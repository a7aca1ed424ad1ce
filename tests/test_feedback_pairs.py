"""orpo-data from-feedback on a real SQLite store written by serve.records: every kind of feedback by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orpo_deploy.data.cli import main
from orpo_deploy.serve.records import RecordSettings, RecordStore

REPO = Path(__file__).resolve().parents[1]


def fill(url: str) -> None:
    store = RecordStore(RecordSettings(url))
    q1 = [{"role": "user", "content": "Name a planet."}]
    q2 = [{"role": "user", "content": "Name a colour."}]
    records = [
        ("c1", q1, ["Mars."]),  # preferred
        ("c2", q1, ["Venus.", "Pluto.", "Earth."]),  # choice 2
        ("c3", q2, ["Blue."]),  # rated up
        ("c4", q2, ["Dunno."]),  # rated down
        ("c5", q2, ["Red.", "Green."]),  # rated, but which of the two?
        ("c7", q2, ["Purple.", "Um."]),  # each choice rated: 0 up, 1 down
    ]
    for cid, prompt, texts in records:
        store.submit(store.completion_record(cid, "m", "sha-a", "k", prompt, {},
                                             [{"index": i, "text": t} for i, t in enumerate(texts)]))  # fmt: skip
    hidden = RecordStore.completion_record.__get__(store)("c6", "m", "sha-a", "k", q1, {}, [{"index": 0, "text": "x"}])
    hidden.update(prompt_policy="hash", prompt=None)
    store.submit(hidden)
    assert store.flush()
    pk = {cid: store.find(cid, "k")["id"] for cid in ("c1", "c2", "c3", "c4", "c5", "c6", "c7")}
    store.add_feedback(pk["c1"], "k", "preferred", preferred="Jupiter, the largest planet.")
    store.add_feedback(pk["c2"], "k", "choice", choice=2)
    store.add_feedback(pk["c3"], "k", "rating", rating=1.0)
    store.add_feedback(pk["c4"], "k", "rating", rating=-1.0)
    store.add_feedback(pk["c5"], "k", "rating", rating=1.0)
    store.add_feedback(pk["c6"], "k", "rating", rating=1.0)
    store.add_feedback(pk["c7"], "k", "rating", rating=1.0, choice=0)
    store.add_feedback(pk["c7"], "k", "rating", rating=-1.0, choice=1)
    store.add_feedback(pk["c1"], "k", "preferred", preferred="Jupiter, the largest planet.")  # said twice
    store.close()


def test_pairs_from_every_kind_of_feedback(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    fill(url)
    assert main(["from-feedback", url, "--output", str(tmp_path / "out"), "--dev-percent", "0"]) == 0
    pairs = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    got = sorted((p["source"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs)
    assert got == [
        ("choice", "Earth.", "Pluto."),
        ("choice", "Earth.", "Venus."),
        ("preferred", "Jupiter, the largest planet.", "Mars."),
        ("rating", "Blue.", "Dunno."),
        ("rating", "Blue.", "Um."),
        ("rating", "Purple.", "Dunno."),
        ("rating", "Purple.", "Um."),
    ]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["dropped"] == {"duplicate": 1, "rating of a completion with several choices, no choice named": 1,
                                "prompt stored as hash": 1}  # fmt: skip
    from orpo_deploy.data.load import load_preference_dataset

    assert len(load_preference_dataset(str(tmp_path / "out" / "train.jsonl"))) == 7  # what orpo-train reads


def test_split_by_prompt_and_filters(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    fill(url)
    assert main(["from-feedback", url, "--output", str(tmp_path / "all"), "--dev-percent", "50"]) == 0
    prompts = {s: {json.dumps(json.loads(line)["prompt"]) for line in (tmp_path / "all" / f"{s}.jsonl").read_text()
                   .splitlines()} for s in ("train", "dev")}  # fmt: skip
    assert not prompts["train"] & prompts["dev"]  # no prompt in both
    proc = subprocess.run([sys.executable, "-m", "orpo_deploy.data.cli", "from-feedback", url, "--model-sha", "other",
                           "--output", str(tmp_path / "none")], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("orpo-data: error: no pairs")
    nope = f"sqlite:///{tmp_path / 'nope.db'}"
    bad = subprocess.run([sys.executable, "-m", "orpo_deploy.data.cli", "from-feedback", nope],
                         capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert bad.returncode == 2 and "cannot read the record store" in bad.stderr and "Traceback" not in bad.stderr
