"""The durable verdict log: every trigger when it arrives, its verdict when decided.

SQLite in WAL mode with `synchronous=FULL`: each trigger and each verdict is its own committed
transaction, and FULL makes SQLite fsync the write-ahead log at every commit, so what was
committed survives a SIGKILL and a power cut (WAL with NORMAL survives a crash but may lose the
last commits on power loss). SQLite rather than fsync'd JSON lines because a verdict *updates*
its trigger's row (one row per part, never a trigger without its answer after a restart),
because retention is a DELETE instead of rewriting files, and because the quality department's
queries (one camera, one shift) are an index away. The log is written by the station before a
verdict goes anywhere else (PLC, ZeroMQ), so nothing downstream knows a verdict the log lacks.

On open, triggers of a camera that never got a verdict (the process died between the two) are
given `error` with reason `restart`. `export` writes rows as CSV or JSON for the quality
department (`lepton-edge verdicts export`).

`DeliveryMarks` lets a sink that forwards verdicts (the MQTT bridge) deliver them *from* this
log: it keeps, per consumer and camera, the highest trigger id the far end acknowledged (table
`delivered`, in the same file) and reads the decided verdicts after it, so an outage longer
than the sink's memory, or a restart while the far end is down, loses no verdict.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from lepton_edge.errors import ConfigError

log = logging.getLogger(__name__)

FILE_NAME = "verdicts.sqlite"
COLUMNS = ("camera", "trigger_id", "source", "ts_trigger", "verdict", "result_code", "reason",
           "latency_ms", "ts_verdict", "part_count", "evidence", "payload")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    camera TEXT NOT NULL,
    trigger_id INTEGER NOT NULL,
    source TEXT,
    ts_trigger REAL NOT NULL,
    verdict TEXT,
    result_code INTEGER,
    reason TEXT,
    latency_ms REAL,
    ts_verdict REAL,
    part_count INTEGER,
    evidence TEXT,
    payload TEXT,
    PRIMARY KEY (camera, trigger_id)
);
CREATE INDEX IF NOT EXISTS verdicts_ts ON verdicts (ts_trigger);
CREATE TABLE IF NOT EXISTS parts (camera TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""
_DELIVERED = """
CREATE TABLE IF NOT EXISTS delivered (
    consumer TEXT NOT NULL,
    camera TEXT NOT NULL,
    trigger_id INTEGER NOT NULL,
    PRIMARY KEY (consumer, camera)
);
"""


def _connect(path: Path, synchronous: str, schema: str,
             failure: str) -> tuple[sqlite3.Connection, str]:
    """The log file opened in WAL mode at `synchronous`, with `schema` made; (the connection,
    the journal mode SQLite gave). ConfigError naming the file when it cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as err:
        raise ConfigError(f"verdict log {path}: {failure} ({err}); is the state directory "
                          f"writable?") from err
    return db, mode


class VerdictLogConfig(BaseModel):
    """Retention: rows older than `retention_days`, and beyond the newest `max_rows`, go (only
    rows that have their verdict). `path`: the file, relative to the state directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = FILE_NAME
    retention_days: Annotated[float, Field(gt=0, le=36500)] = 90.0
    max_rows: Annotated[int, Field(ge=100, le=100_000_000)] = 1_000_000


class VerdictLog:
    """One connection to the log file, safe to use from several threads."""

    prune_every = 1000  # verdicts between retention passes

    def __init__(self, path: Path, cfg: VerdictLogConfig | None = None) -> None:
        self.path = Path(path)
        self.cfg = cfg or VerdictLogConfig()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._since_prune = 0

    # ------------------------------------------------------------ lifecycle

    def open(self) -> VerdictLog:
        db, mode = _connect(self.path, "FULL", _SCHEMA, "cannot open it")
        if mode.lower() != "wal":
            log.warning("verdict log %s: journal mode is %s, not WAL", self.path, mode)
        self._db = db
        self.prune()
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> VerdictLog:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writes

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"verdict log {self.path} is not open")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def record_trigger(self, camera: str, trigger_id: int, source: str, ts: float) -> None:
        """A trigger arrived (committed, fsync'd). A verdict recorded first is kept."""
        self._write([("INSERT INTO verdicts (camera, trigger_id, source, ts_trigger) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (camera, trigger_id, source, ts))])

    def record_verdict(self, verdict: dict[str, Any]) -> None:
        """A verdict (its payload dict) was decided: one transaction with the part counter."""
        reasons = verdict.get("reasons") or []
        row = (verdict["camera"], verdict["trigger_id"], verdict.get("source"),
               verdict["ts_trigger"], verdict["verdict"], verdict.get("result_code"),
               reasons[0]["code"] if reasons else None, verdict.get("latency_ms"),
               verdict.get("ts"), verdict.get("part_count"), verdict.get("evidence"),
               json.dumps(verdict, separators=(",", ":")))
        self._write([
            (f"INSERT INTO verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 12)}) "
             "ON CONFLICT (camera, trigger_id) DO UPDATE SET verdict=excluded.verdict, "
             "result_code=excluded.result_code, reason=excluded.reason, "
             "latency_ms=excluded.latency_ms, ts_verdict=excluded.ts_verdict, "
             "part_count=excluded.part_count, evidence=excluded.evidence, "
             "payload=excluded.payload", row),
            ("INSERT INTO parts (camera, count) VALUES (?, ?) ON CONFLICT (camera) DO UPDATE "
             "SET count=max(count, excluded.count)", (verdict["camera"],
                                                      verdict.get("part_count") or 0)),
        ])
        self._since_prune += 1
        if self._since_prune >= self.prune_every:
            self.prune()

    def prune(self) -> int:
        """Apply retention; returns the rows deleted. Rows still waiting for a verdict stay."""
        cutoff = time.time() - self.cfg.retention_days * 86400
        with self._lock:
            if self._db is None:
                return 0
            self._since_prune = 0
            n = self._db.execute("DELETE FROM verdicts WHERE verdict IS NOT NULL AND "
                                 "ts_trigger < ?", (cutoff,)).rowcount
            n += self._db.execute(
                "DELETE FROM verdicts WHERE verdict IS NOT NULL AND rowid IN (SELECT rowid "
                "FROM verdicts ORDER BY ts_trigger DESC LIMIT -1 OFFSET ?)",
                (self.cfg.max_rows,)).rowcount
        if n:
            log.info("verdict log %s: retention removed %d rows", self.path, n)
        return n

    # ------------------------------------------------------------ reads

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"verdict log {self.path} is not open")
            return self._db.execute(sql, args).fetchall()

    def last_trigger_id(self, camera: str) -> int:
        return int(self._query("SELECT coalesce(max(trigger_id), 0) FROM verdicts "
                               "WHERE camera = ?", (camera,))[0][0])

    def part_count(self, camera: str) -> int:
        rows = self._query("SELECT count FROM parts WHERE camera = ?", (camera,))
        return int(rows[0][0]) if rows else 0

    def unanswered(self, camera: str) -> list[dict[str, Any]]:
        """Triggers of `camera` with no verdict (oldest first)."""
        rows = self._query("SELECT trigger_id, source, ts_trigger FROM verdicts WHERE camera = ? "
                           "AND verdict IS NULL ORDER BY trigger_id", (camera,))
        return [{"trigger_id": r[0], "source": r[1], "ts_trigger": r[2]} for r in rows]

    def rows(self, camera: str | None = None, since: float | None = None,
             until: float | None = None) -> Iterator[dict[str, Any]]:
        """Rows in trigger order, optionally one camera and a time range (epoch seconds)."""
        where, args = [], []
        for cond, value in (("camera = ?", camera), ("ts_trigger >= ?", since),
                            ("ts_trigger < ?", until)):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = (f"SELECT {', '.join(COLUMNS)} FROM verdicts"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + " ORDER BY ts_trigger, camera, trigger_id")
        for r in self._query(sql, tuple(args)):
            yield dict(zip(COLUMNS, r, strict=True))


class DeliveryMarks:
    """A consumer's delivery marks in a verdict log file: per camera, every verdict up to
    `mark(camera)` reached the far end. Its own connection (WAL, 10 s busy timeout), so it
    reads and writes beside the station's `VerdictLog` without sharing its lock.

    One table `delivered (consumer, camera, trigger_id)` rather than a column on `verdicts`:
    a mark is one row per consumer and camera (no write per verdict, no lock on the station's
    rows), and a second consumer (another bridge, a webhook) gets its own mark. The mark is
    written with `synchronous=NORMAL`: a power cut may lose its last updates, which only means
    those verdicts are sent again (at-least-once), never that one is skipped."""

    def __init__(self, path: Path, consumer: str) -> None:
        self.path = Path(path)
        self.consumer = consumer
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> DeliveryMarks:
        # the station may not have made the file yet: its schema too
        self._db, _ = _connect(self.path, "NORMAL", _SCHEMA + _DELIVERED,
                               "cannot open it to deliver verdicts")
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"verdict log {self.path} is not open")
            return self._db.execute(sql, args).fetchall()

    def mark(self, camera: str) -> int:
        """The stored mark; a consumer new to this camera starts just before the oldest trigger
        still waiting for its verdict (a previous run's, to be answered `error: restart`), or
        after the newest one: verdicts decided before the consumer existed are not sent."""
        rows = self._run("SELECT trigger_id FROM delivered WHERE consumer = ? AND camera = ?",
                         (self.consumer, camera))
        if rows:
            return int(rows[0][0])
        first = self._run("SELECT coalesce((SELECT min(trigger_id) - 1 FROM verdicts WHERE "
                          "camera = ?1 AND verdict IS NULL), (SELECT max(trigger_id) FROM "
                          "verdicts WHERE camera = ?1), 0)", (camera,))[0][0]
        self.set_mark(camera, int(first))
        return int(first)

    def set_mark(self, camera: str, trigger_id: int) -> None:
        self._run("INSERT INTO delivered (consumer, camera, trigger_id) VALUES (?, ?, ?) "
                  "ON CONFLICT (consumer, camera) DO UPDATE SET trigger_id=excluded.trigger_id",
                  (self.consumer, camera, trigger_id))

    def decided_after(self, camera: str, trigger_id: int,
                      limit: int = 256) -> list[tuple[int, bytes]]:
        """(trigger_id, payload) of the decided verdicts after `trigger_id`, in trigger order:
        the payload is the verdict's schema v1 JSON, byte for byte what the station emitted."""
        rows = self._run("SELECT trigger_id, payload FROM verdicts WHERE camera = ? AND "
                         "trigger_id > ? AND payload IS NOT NULL ORDER BY trigger_id LIMIT ?",
                         (camera, trigger_id, limit))
        return [(int(t), p.encode()) for t, p in rows]

    def between(self, camera: str, lo: int, hi: int) -> list[tuple[int, bool]]:
        """(trigger_id, decided) of the rows with lo < trigger_id <= hi, in trigger order."""
        rows = self._run("SELECT trigger_id, payload IS NOT NULL FROM verdicts WHERE camera = ? "
                         "AND trigger_id > ? AND trigger_id <= ? ORDER BY trigger_id",
                         (camera, lo, hi))
        return [(int(t), bool(d)) for t, d in rows]

    def waiting(self, camera: str, trigger_id: int) -> int:
        """How many decided verdicts come after `trigger_id`."""
        return int(self._run("SELECT count(*) FROM verdicts WHERE camera = ? AND trigger_id > ? "
                             "AND payload IS NOT NULL", (camera, trigger_id))[0][0])


def export(rows: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    """Write `rows` as `csv` (one line per trigger, the payload's reasons flattened) or `json`
    (one array of the verdict payloads, a pending trigger as its bare row); returns the count."""
    n = 0
    if fmt == "csv":
        fields = [c for c in COLUMNS if c != "payload"] + ["reasons"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            payload = json.loads(row["payload"]) if row["payload"] else {}
            reasons = "; ".join(
                f"{r.get('code')} {r.get('roi') or ''} {r.get('rule') or ''} expected "
                f"{r.get('expected')} found {r.get('found')}".replace("  ", " ")
                for r in payload.get("reasons", []))
            writer.writerow({**{k: row[k] for k in fields[:-1]}, "reasons": reasons})
            n += 1
        return n
    if fmt != "json":
        raise ConfigError(f"export format must be csv or json, got {fmt!r}")
    out.write("[")
    for row in rows:
        body = json.loads(row["payload"]) if row["payload"] else {
            k: row[k] for k in COLUMNS if k != "payload"}
        out.write(("," if n else "") + "\n" + json.dumps(body, separators=(",", ":")))
        n += 1
    out.write("\n]\n")
    return n
