"""The feedback store on a real SQLite file: recording through the HTTP layer (fake engine), the feedback API and
its envelopes, deletion by key, a full record queue that never slows a request, and a writer killed mid-write."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_serve_http import CHAT, KEY, OTHER_KEY, assert_envelope, chat_body, serving

from orpo_deploy.serve.records import RecordSettings, RecordStore, completions, feedback, key_hash

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def rows(url: str, table) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = [dict(r) for r in conn.execute(sa.select(table)).mappings()]
    engine.dispose()
    return out


@pytest.mark.anyio
async def test_completions_are_recorded_with_what_the_client_got(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    async with serving(record=url) as (app, client, _):
        r = await client.post(CHAT, json=chat_body(max_tokens=4))
        s = await client.post(CHAT, json=chat_body(max_tokens=3, stream=True, n=2, temperature=1.0))
        assert r.status_code == 200 and s.status_code == 200
        assert app.state.serve.records.flush()
    recorded = rows(url, completions)
    assert len(recorded) == 2
    first = recorded[0]
    assert first["completion_id"] == r.json()["id"] and first["key_hash"] == key_hash(KEY)
    assert first["choices"] == [{"index": 0, "text": r.json()["choices"][0]["message"]["content"]}]
    assert first["prompt"] == [{"role": "user", "content": "hello there"}] and first["sampling"]["max_tokens"] == 4
    assert [c["index"] for c in recorded[1]["choices"]] == [0, 1] and recorded[1]["choices"][0]["text"] == " w0 w1 w2"


@pytest.mark.anyio
async def test_feedback_sent_at_once_waits_for_its_record_instead_of_a_404(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    async with serving(record=url) as (app, client, _):
        completion = (await client.post(CHAT, json=chat_body())).json()["id"]
        # no flush: the writer lingers 0.5 s before committing, so the record is most likely still queued
        r = await client.post("/v1/feedback", json={"completion_id": completion, "rating": "up"})
        assert r.status_code == 200, r.text


@pytest.mark.anyio
async def test_feedback_api_and_its_envelopes(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    async with serving(record=url) as (app, client, _):
        completion = (await client.post(CHAT, json=chat_body(n=2, temperature=1.0))).json()["id"]
        assert app.state.serve.records.flush()
        said = (
            {"rating": "up"},
            {"rating": -0.5},
            {"preferred": "A better answer."},
            {"choice": 1},
            {"rating": "down", "choice": 1},
        )  # fmt: skip  (the last: one of the two choices rated)
        for body in said:
            r = await client.post("/v1/feedback", json={"completion_id": completion, **body})
            assert r.status_code == 200 and r.json()["object"] == "feedback", r.text
        bad = [
            ({"completion_id": completion}, 400, "rating"),  # nothing said
            ({"completion_id": completion, "preferred": "x", "choice": 0}, 400, "choice"),  # two things said
            ({"completion_id": completion, "rating": "up", "choice": 2}, 400, "choice"),  # rates a choice not there
            ({"completion_id": completion, "choice": 5}, 400, "choice"),  # 2 choices only
            ({"completion_id": completion, "rating": 2}, 400, "rating"),
            ({"completion_id": completion, "rating": "meh"}, 400, "rating"),
            ({"completion_id": completion, "rating": "up", "extra": 1}, 400, "extra"),
            ({"completion_id": "chatcmpl-nope", "rating": "up"}, 404, "completion_id"),
        ]
        for body, status, param in bad:
            r = await client.post("/v1/feedback", json=body)
            assert_envelope(r, status, param=param)
        other = {"Authorization": f"Bearer {OTHER_KEY}"}  # another key cannot rate (or see) this completion
        assert_envelope(await client.post("/v1/feedback", json={"completion_id": completion, "rating": "up"},
                                          headers=other), 404, code="completion_not_found")  # fmt: skip
        await client.post(CHAT, json=chat_body(), headers=other)
        assert app.state.serve.records.flush()
        deleted = await client.delete("/v1/records")
        assert deleted.json()["deleted"] == 1
    assert [r["kind"] for r in rows(url, feedback)] == []  # the deleted completion's feedback went with it
    assert [r["key_hash"] for r in rows(url, completions)] == [key_hash(OTHER_KEY)]


@pytest.mark.anyio
async def test_feedback_routes_are_404_without_recording():
    async with serving() as (_, client, _):
        assert_envelope(await client.post("/v1/feedback", json={"completion_id": "x", "rating": "up"}), 404)


@pytest.mark.anyio
async def test_a_full_record_queue_drops_and_counts_and_never_slows_a_request(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    original = RecordStore._run

    def stalled_writer(self):  # the store is stuck (a locked database, a slow network)
        time.sleep(3)
        original(self)

    monkeypatch.setattr(RecordStore, "_run", stalled_writer)
    async with serving(record=url, record_queue=2) as (app, client, _):
        started = time.perf_counter()
        results = await asyncio.gather(*(client.post(CHAT, json=chat_body()) for _ in range(12)))
        elapsed = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in results) and elapsed < 2.5, elapsed
    assert "orpo_serve_records_dropped_total 10.0" in metrics


def test_prompts_can_be_kept_as_a_hash_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = RecordStore(RecordSettings(url, prompts="hash"))
    store.submit(store.completion_record("c1", "m", None, None, [{"role": "user", "content": "secret"}], {}, []))
    assert store.flush()
    store.close()
    (row,) = rows(url, completions)
    assert row["prompt"] is None and len(row["prompt_sha"]) == 64 and "secret" not in json.dumps(row, default=str)


def test_records_arriving_apart_share_one_transaction_within_the_linger(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = RecordStore(RecordSettings(url, linger_s=0.4))
    commits = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(time.monotonic()))
    for i in range(10):  # 10 records 20 ms apart: 0.2 s, within one linger
        store.submit(store.completion_record(f"c{i}", "m", None, None, "p", {}, []))
        time.sleep(0.02)
    assert store.flush()
    store.close()
    assert len(rows(url, completions)) == 10 and len(commits) == 1, len(commits)


WRITER = """
import sys, time
from orpo_deploy.serve.records import RecordSettings, RecordStore
store = RecordStore(RecordSettings(sys.argv[1], batch_size=8))
i = 0
while True:
    for _ in range(8):
        choices = [{"index": 0, "text": "t" * 500}]
        store.submit(store.completion_record(f"c{i}", "m", None, None, "p" * 200, {}, choices))
        i += 1
    time.sleep(0.005)
    print(store.written, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_a_consistent_database_with_every_commit(tmp_path):
    db = tmp_path / "records.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, f"sqlite:///{db}"], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)  # fmt: skip
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 400 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline() or 0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed >= 400
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = conn.execute("SELECT count(*) FROM completions").fetchone()[0]
        torn = conn.execute("SELECT count(*) FROM completions WHERE length(choices) < 500").fetchone()[0]
    assert count >= committed  # every commit it reported survived the kill
    assert torn == 0  # and no row is half written


def test_the_same_store_on_a_real_postgresql_server(tmp_path):
    """Migrations, recording, feedback, deletion and a writer killed mid-write, on PostgreSQL (the multi-replica
    store) started by the test."""
    from tests.pg import postgres_server

    with postgres_server() as url:
        store = RecordStore(RecordSettings(url))
        q = [{"role": "user", "content": "Name a planet."}]
        for cid, text in (("c1", "Mars."), ("c2", "Pluto.")):
            store.submit(store.completion_record(cid, "m", "sha", key_hash(KEY), q, {}, [{"index": 0, "text": text}]))
        assert store.flush()
        up, down = store.find("c1", key_hash(KEY)), store.find("c2", key_hash(KEY))
        store.add_feedback(up["id"], key_hash(KEY), "rating", rating=1.0)
        store.add_feedback(down["id"], key_hash(KEY), "rating", rating=-1.0)
        store.close()
        from orpo_deploy.data.cli import main as data_main

        assert data_main(["from-feedback", url, "--output", str(tmp_path / "pairs"), "--dev-percent", "0"]) == 0
        (pair,) = [json.loads(line) for line in (tmp_path / "pairs" / "train.jsonl").read_text().splitlines()]
        assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == ("Mars.", "Pluto.")
        RecordStore(RecordSettings(url)).close()  # migrating again is a no-op

        proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, cwd=REPO)
        committed, deadline = 0, time.monotonic() + 60
        while committed < 400 and time.monotonic() < deadline:
            committed = int(proc.stdout.readline() or 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM completions WHERE completion_id LIKE 'c%'")).scalar()
            torn = conn.execute(sa.text("SELECT count(*) FROM completions WHERE length(choices::text) < 500")).scalar()
        engine.dispose()
        assert committed >= 400 and count - 2 >= committed and torn == 2  # the two short rows above


@pytest.mark.anyio
async def test_a_store_that_cannot_be_opened_stops_the_server_at_start(tmp_path):
    from orpo_deploy.serve.records import RecordError

    with pytest.raises(RecordError, match="cannot migrate the record store"):
        async with serving(record=f"sqlite:///{tmp_path}/no/such/folder/r.db"):
            pass
