"""The feedback store: what orpo-serve answered (``--record URL``) and what its users said about it.

SQLite by default (a file, no server to run), PostgreSQL by URL for more than one replica, through SQLAlchemy; the
schema is created and upgraded by Alembic migrations (``serve/migrations``) when the server starts.

Writes leave the request path: a completion is put on a bounded queue and a writer thread commits batches. A full
queue drops the record and counts it (``orpo_serve_records_dropped_total``); it never slows or fails a request.
Each batch is one transaction, so a server killed mid-write loses at most the uncommitted batch and leaves a
consistent database (SQLite in WAL mode; PostgreSQL's own durability).

Prompts are stored as sent (``full``), as a sha256 only (``hash``), or with their text removed (``redact``): the
last two keep nothing a user typed, and cannot feed a training set. API keys are stored as a sha256, so a user can
delete what they recorded (``DELETE /v1/records``) without the store ever holding the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orpo_deploy.core.errors import UsageError

logger = logging.getLogger(__name__)

PROMPT_POLICIES = ("full", "hash", "redact")
MIGRATIONS = Path(__file__).with_name("migrations")

metadata = sa.MetaData()
completions = sa.Table(
    "completions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("completion_id", sa.String(160), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("model_sha", sa.String(64), nullable=True, index=True),
    sa.Column("key_hash", sa.String(64), nullable=True, index=True),
    sa.Column("prompt_policy", sa.String(8), nullable=False),
    sa.Column("prompt_sha", sa.String(64), nullable=False, index=True),
    sa.Column("prompt", sa.JSON, nullable=True),
    sa.Column("sampling", sa.JSON, nullable=False),
    sa.Column("choices", sa.JSON, nullable=False),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "completion", sa.Integer, sa.ForeignKey("completions.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # rating | preferred | choice
    sa.Column("rating", sa.Float, nullable=True),
    sa.Column("preferred", sa.Text, nullable=True),
    sa.Column("choice", sa.Integer, nullable=True),
)


class RecordError(UsageError):
    """A store that cannot be opened or migrated; the message says which and why."""


def key_hash(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def prompt_sha(prompt: Any) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def stored_prompt(prompt: Any, policy: str) -> Any:
    """What the store keeps of a prompt (a message list or a string) under ``policy``."""
    if policy == "full":
        return prompt
    if policy == "hash":
        return None
    if isinstance(prompt, list):
        return [{"role": m.get("role"), "chars": len(m.get("content") or "")} for m in prompt]
    return {"chars": len(prompt) if isinstance(prompt, str) else None}


def make_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine; SQLite files get WAL (a reader never blocks the writer) and foreign keys on."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise RecordError(f"record URL {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest migration (Alembic), with one line on failure."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    try:
        command.upgrade(cfg, "head")
    except Exception as exc:  # a server that cannot reach or write the store must say so and stop
        raise RecordError(f"cannot migrate the record store {safe_url(url)}: {type(exc).__name__}: {exc}") from None


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


@dataclass
class RecordSettings:
    url: str
    prompts: str = "full"
    queue_size: int = 1024
    retention_days: float | None = None
    retention_count: int | None = None
    batch_size: int = 64
    linger_s: float = 0.5
    """After the first record of a batch, wait this long for more before committing: at a steady 15 req/s that is
    one transaction for ~8 records instead of one each (each commit costs the serving process its GIL time)."""


class RecordStore:
    """The writer thread and the few queries the feedback API needs; all database I/O is off the event loop."""

    def __init__(self, settings: RecordSettings, on_drop=None) -> None:
        if settings.prompts not in PROMPT_POLICIES:
            raise RecordError(f"record prompts must be one of {', '.join(PROMPT_POLICIES)}, got {settings.prompts!r}")
        self.settings = settings
        migrate(settings.url)
        self.engine = make_engine(settings.url)
        self.queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self.on_drop = on_drop or (lambda: None)
        self.written = 0
        # completion ids queued but not yet committed: feedback that arrives within the writer's linger waits for
        # its record (wait_written) instead of getting a 404
        self._pending: Counter[str] = Counter()
        self._committed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()
        self._last_prune = 0.0

    # -- the request path: never blocks ----------------------------------------------------------------------------

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one completion record; False (and counted) when the queue is full."""
        with self._committed:
            self._pending[record["completion_id"]] += 1
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self._settle([record])
            self.on_drop()
            return False

    def completion_record(
        self, completion_id: str, model: str, model_sha: str | None, api_key_hash: str | None, prompt: Any,
        sampling: dict[str, Any], choices: list[dict[str, Any]],
    ) -> dict[str, Any]:  # fmt: skip
        return {
            "completion_id": completion_id,
            "created_at": datetime.now(UTC),
            "model": model,
            "model_sha": model_sha,
            "key_hash": api_key_hash,
            "prompt_policy": self.settings.prompts,
            "prompt_sha": prompt_sha(prompt),
            "prompt": stored_prompt(prompt, self.settings.prompts),
            "sampling": sampling,
            "choices": choices,
        }

    # -- the writer thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            batch = []
            try:
                batch.append(self.queue.get(timeout=0.2))
                deadline = time.monotonic() + self.settings.linger_s
                while len(batch) < self.settings.batch_size and not self._stop.is_set():
                    batch.append(self.queue.get(timeout=max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                pass
            if batch:
                try:
                    with self.engine.begin() as conn:  # one transaction per batch
                        conn.execute(completions.insert(), batch)
                    self.written += len(batch)
                except Exception as exc:  # the store is down: drop this batch, count it, keep serving
                    logger.error("record store write failed (%d records dropped): %s", len(batch), exc)
                    for _ in batch:
                        self.on_drop()
                self._settle(batch)
                for _ in batch:  # written or dropped: flush() waits on this count
                    self.queue.task_done()
            retention = self.settings.retention_days is not None or self.settings.retention_count is not None
            if retention and time.monotonic() - self._last_prune > 60:
                self._prune()

    def _settle(self, records: list[dict[str, Any]]) -> None:
        """These records are committed (or dropped): wake whoever waits for them."""
        with self._committed:
            for r in records:
                self._pending[r["completion_id"]] -= 1
                if self._pending[r["completion_id"]] <= 0:
                    del self._pending[r["completion_id"]]
            self._committed.notify_all()

    def wait_written(self, completion_id: str, timeout: float = 5.0) -> None:
        """Block until no record of ``completion_id`` is waiting in the queue (at most ``timeout`` seconds)."""
        with self._committed:
            self._committed.wait_for(lambda: completion_id not in self._pending, timeout=timeout)

    def _prune(self) -> None:
        self._last_prune = time.monotonic()
        s = self.settings
        try:
            with self.engine.begin() as conn:
                if s.retention_days is not None:
                    cutoff = datetime.now(UTC) - timedelta(days=s.retention_days)
                    conn.execute(completions.delete().where(completions.c.created_at < cutoff))
                if s.retention_count is not None:
                    keep = sa.select(completions.c.id).order_by(completions.c.id.desc()).limit(s.retention_count)
                    conn.execute(completions.delete().where(completions.c.id.not_in(keep.scalar_subquery())))
        except Exception as exc:
            logger.error("record store retention failed: %s", exc)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written or dropped (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.queue.unfinished_tasks

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.engine.dispose()

    # -- the feedback API's queries (called through asyncio.to_thread) --------------------------------------------

    def find(self, completion_id: str, api_key_hash: str | None) -> dict[str, Any] | None:
        """The newest record of ``completion_id`` made with this key (ids come from clients and may repeat)."""
        same_key = completions.c.key_hash.is_(None) if api_key_hash is None else completions.c.key_hash == api_key_hash
        query = (
            sa.select(completions)
            .where(completions.c.completion_id == completion_id, same_key)
            .order_by(completions.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def add_feedback(self, completion_pk: int, api_key_hash: str | None, kind: str, **values: Any) -> int:
        row = {"completion": completion_pk, "created_at": datetime.now(UTC), "key_hash": api_key_hash, "kind": kind}
        with self.engine.begin() as conn:
            return conn.execute(feedback.insert().values(**row, **values)).inserted_primary_key[0]

    def delete_by_key(self, api_key_hash: str | None) -> int:
        """Delete every completion (and its feedback) recorded with this key; returns how many completions."""
        cond = completions.c.key_hash.is_(None) if api_key_hash is None else completions.c.key_hash == api_key_hash
        with self.engine.begin() as conn:
            ids = sa.select(completions.c.id).where(cond)
            conn.execute(feedback.delete().where(feedback.c.completion.in_(ids.scalar_subquery())))
            return conn.execute(completions.delete().where(cond)).rowcount
