"""The annotation queue's guarantees, each checked on SQLite and on a real PostgreSQL server.

Overlap, leases (expiry through the queue's clock, never by sleeping), skip/release, idempotent
submit, answer validation, priority, ``record`` for judges and imports, and real processes racing
for the same slots. Where a test needs another transaction in flight, it waits until the other
thread is seen blocked on the lock (``waitkit.blocked_by``), never for a guessed time.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import sqlite3
import threading
from collections import Counter

import pytest
from psycopg import pq
from sqlalchemy import event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool
from waitkit import blocked_by, wait_until

from prefloop.errors import DuplicateSubmission, InvalidAnswer, NotAssigned, NotFoundError, QueueError
from prefloop.feedback import queue_sql
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store
from prefloop.feedback.store.models import Annotation, Lease, Task, utcnow


def _annotations(store: Store, task_id: int) -> list[Annotation]:
    with store.session() as s:
        return list(s.scalars(select(Annotation).where(Annotation.task_id == task_id).order_by(Annotation.id)))


def _task(store: Store, task_id: int) -> Task:
    with store.session() as s:
        return s.get(Task, task_id)


def _choice(claimed) -> dict:  # noqa: ANN001 - ClaimedTask
    return {"choice": claimed.candidates[0].generation_id}


# ---------------------------------------------------------------------------------------- overlap
def test_overlap_k_serves_k_distinct_annotators(store: Store) -> None:
    q = Queue(store, overlap=3, lease_seconds=60)
    tid = q.add_comparison("Which is kinder?", ["yes", "no"])
    a1, a2, a3, a4 = (q.ensure_annotator(f"ann{i}") for i in range(1, 5))

    first = q.claim(a1)
    assert first is not None and first.task_id == tid
    assert [c.text for c in first.candidates] == ["yes", "no"]
    assert first.prompt_text == "Which is kinder?"
    q.submit(a1, tid, _choice(first))
    assert q.claim(a1) is None, "a task must never be served twice to the same annotator"

    assert q.claim(a2).task_id == tid
    assert q.claim(a3).task_id == tid
    assert q.claim(a4) is None, "two leases + one answer fill an overlap of 3"

    q.submit(a2, tid, {"choice": "tie"})
    q.submit(a3, tid, _choice(first))
    assert q.claim(a4) is None
    task = _task(store, tid)
    assert (task.n_done, task.status) == (3, "complete")
    anns = _annotations(store, tid)
    assert sorted(a.annotator_id for a in anns) == sorted([a1, a2, a3])
    assert all(a.status == "submitted" for a in anns)
    assert q.status().tasks_by_kind_status == {("compare", "complete"): 1}


def test_overlap_zero_task_is_never_served(queue: Queue) -> None:
    queue.add_rating("Rate me", "an answer", overlap=0)
    assert queue.claim(queue.ensure_annotator("ann")) is None


# ---------------------------------------------------------------------------------------- leases
class Clock:
    """The queue's idea of now, moved forward by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def test_expired_lease_frees_the_slot_and_a_late_submit_is_kept(store: Store) -> None:
    clock = Clock()
    q = Queue(store, overlap=1, lease_seconds=60, clock=clock)
    tid = q.add_comparison("Q?", ["a", "b"])
    alice, bob = q.ensure_annotator("alice"), q.ensure_annotator("bob")

    claimed = q.claim(alice)
    assert claimed.task_id == tid and claimed.lease_expires_at == clock.now + dt.timedelta(seconds=60)
    clock.advance(59.9)
    assert q.claim(bob) is None, "the only slot is leased to alice"
    assert q.status().active_leases == 1 and q.progress(bob)["remaining"] == 0
    clock.advance(0.2)
    assert q.status().active_leases == 0 and q.progress(bob)["remaining"] == 1
    assert q.claim(bob).task_id == tid, "an expired lease frees its slot"
    assert q.claim(alice) is None, "the slot is now bob's"

    late = q.submit(alice, tid, _choice(claimed))
    assert late.late and not late.duplicate
    on_time = q.submit(bob, tid, {"choice": "tie"})
    assert not on_time.late
    anns = _annotations(store, tid)
    assert [(a.annotator_id, a.late) for a in anns] == [(alice, True), (bob, False)]
    assert _task(store, tid).n_done == 2, "a late answer is counted, never lost"
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Lease)) == 0


def test_claim_twice_returns_the_held_task_release_frees_it_skip_hides_it(queue: Queue) -> None:
    t1 = queue.add_comparison("first", ["a", "b"], priority=2)
    t2 = queue.add_comparison("second", ["c", "d"], priority=1)
    a, b = queue.ensure_annotator("a"), queue.ensure_annotator("b")

    c1 = queue.claim(a)
    again = queue.claim(a)
    assert c1.task_id == again.task_id == t1, "a reloaded page keeps its task"
    assert again.lease_expires_at >= c1.lease_expires_at
    assert queue.claim(b).task_id == t2, "t1's only slot is a's"
    assert queue.release(b, t2) is True

    assert queue.release(a, t1) is True
    assert queue.release(a, t1) is False, "nothing left to release"
    assert queue.claim(b).task_id == t1, "a released slot goes to the next claimer"
    assert queue.claim(a).task_id == t2

    queue.skip(a, t2, reason="not my language")
    assert queue.claim(a) is None, "t1 is leased to b and a skipped t2"
    assert queue.release(b, t1) is True
    assert queue.claim(a).task_id == t1
    queue.skip(a, t1)
    assert queue.claim(a) is None, "a skipped task is never served again to that annotator"
    assert queue.claim(b).task_id == t1, "a skip frees the slot for others"
    with pytest.raises(NotAssigned):
        queue.skip(a, t2)
    assert queue.progress(a) == {"done": 0, "skipped": 2, "remaining": 0}
    assert queue.status().skips == 2


# ---------------------------------------------------------------------------------------- submit
def test_resubmit_with_the_same_key_is_idempotent(store: Store, queue: Queue) -> None:
    t1 = queue.add_comparison("one", ["a", "b"], priority=1)
    t2 = queue.add_comparison("two", ["c", "d"])
    ann = queue.ensure_annotator("ann")

    c1 = queue.claim(ann)
    first = queue.submit(ann, t1, _choice(c1), idempotency_key="key-1")
    retry = queue.submit(ann, t1, _choice(c1), idempotency_key="key-1")
    assert retry.duplicate and not first.duplicate
    assert retry.annotation_id == first.annotation_id
    assert len(_annotations(store, t1)) == 1
    assert _task(store, t1).n_done == 1

    c2 = queue.claim(ann)
    assert c2.task_id == t2
    with pytest.raises(QueueError, match="idempotency key 'key-1' was already used"):
        queue.submit(ann, t2, _choice(c2), idempotency_key="key-1")
    assert _annotations(store, t2) == [], "a refused submit writes nothing"
    ok = queue.submit(ann, t2, _choice(c2), idempotency_key="key-2")
    assert not ok.duplicate
    with pytest.raises(DuplicateSubmission, match="already answered"):
        queue.submit(ann, t2, _choice(c2))
    with pytest.raises(DuplicateSubmission):
        queue.submit(ann, t1, _choice(c1), idempotency_key="key-3")
    assert [len(_annotations(store, t)) for t in (t1, t2)] == [1, 1]


def test_a_retry_racing_the_first_submit_gets_the_first_receipt(store: Store, queue: Queue) -> None:
    """Another process's first submit is still in flight when the retry arrives."""
    tid = queue.add_comparison("Q", ["a", "b"])
    ann = queue.ensure_annotator("ann")
    claimed = queue.claim(ann)
    first = store.engine.connect()
    tx = first.begin()  # SQLite: holds the write lock; PostgreSQL: the row is not yet visible
    first_id = first.execute(
        Annotation.__table__.insert().returning(Annotation.id),
        {"task_id": tid, "annotator_id": ann, "status": "submitted", "value": _choice(claimed),
         "late": False, "idempotency_key": "k", "meta": {}, "history": []},
    ).scalar_one()
    outcome: dict = {}
    committing = threading.Event()

    def retry() -> None:
        try:
            outcome["receipt"] = queue.submit(ann, tid, _choice(claimed), idempotency_key="k")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
        outcome["after_commit"] = committing.is_set()

    worker = threading.Thread(target=retry)
    worker.start()
    wait_until(lambda: not worker.is_alive() or blocked_by(store, first, worker), "the retry to reach the lock")
    committing.set()
    tx.commit()
    first.close()
    worker.join(timeout=60)
    assert outcome["after_commit"], "the retry must wait for the first submit's transaction"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["receipt"].duplicate and outcome["receipt"].annotation_id == first_id
    assert [a.id for a in _annotations(store, tid)] == [first_id]


def test_a_claim_waits_for_a_busy_task_rather_than_report_an_empty_queue(store: Store) -> None:
    """The only task with a slot left is row-locked by a submit still in flight (PostgreSQL:
    ``SKIP LOCKED`` passes over it; SQLite: the whole database is locked). The claim must wait
    and get it, not answer ``None``."""
    q = Queue(store, overlap=2, lease_seconds=60)
    tid = q.add_comparison("Q", ["a", "b"])
    alice, bob = q.ensure_annotator("alice"), q.ensure_annotator("bob")
    assert q.claim(alice).task_id == tid
    outcome: dict = {}
    committing = threading.Event()

    def claim() -> None:
        outcome["claimed"] = q.claim(bob)
        outcome["after_commit"] = committing.is_set()

    worker = threading.Thread(target=claim)
    with store.engine.connect() as busy:
        tx = busy.begin()
        try:
            busy.execute(update(Task).where(Task.id == tid).values(priority=Task.priority))  # holds the row lock
            worker.start()
            wait_until(lambda: not worker.is_alive() or blocked_by(store, busy, worker), "the claim to reach the lock")
        finally:
            committing.set()
            tx.commit()
    worker.join(timeout=60)
    assert outcome["after_commit"], f"the claim answered {outcome.get('claimed')} instead of waiting for the busy task"
    assert outcome["claimed"] is not None and outcome["claimed"].task_id == tid


def test_sqlite_transactions_hold_the_write_lock_from_begin(sqlite_url: str) -> None:
    """``BEGIN IMMEDIATE``: a read-then-write transaction cannot be overtaken by another writer."""
    store = open_store(sqlite_url)
    other = sqlite3.connect(make_url(sqlite_url).database, timeout=0, isolation_level=None)
    try:
        for opened in (store.transaction, store.session):
            with opened() as conn:
                conn.execute(select(func.count()).select_from(Task))  # a read: the lock is already ours
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
        store.dispose()


def test_invalid_answers_are_refused_with_the_reason(store: Store) -> None:
    q = Queue(store, overlap=1, lease_seconds=60, allow_ties=False, rating_scale=(1, 5))
    ann = q.ensure_annotator("ann")
    rate = q.add_rating("Rate", "out")
    compare = q.add_comparison("Compare", ["x", "y"])
    rank = q.add_ranking("Rank", ["p", "q", "r"])
    edit = q.add_edit("Edit", "draft")

    def refused(task_id: int, value, pattern: str) -> None:  # noqa: ANN001
        with pytest.raises(InvalidAnswer, match=pattern):
            q.submit(ann, task_id, value)

    assert q.claim(ann, kinds=["rate"]).task_id == rate
    refused(rate, {"rating": 6}, r"rating 6 is outside the scale 1–5")
    refused(rate, {"rating": 0}, r"outside the scale")
    refused(rate, {"rating": "4"}, r"rating must be an integer from 1 to 5, got '4'")
    refused(rate, {"rating": 2.5}, r"must be an integer")
    refused(rate, {"rating": True}, r"must be an integer")
    refused(rate, {"score": 3}, r"needs the field 'rating'")
    refused(rate, {"rating": 3, "why": "ok"}, r"unexpected field\(s\) \['why'\]")
    refused(rate, [3], r"must be an object")
    q.submit(ann, rate, {"rating": 5})

    claimed = q.claim(ann, kinds=["compare"])
    assert claimed.task_id == compare and claimed.allow_tie is False
    ids = [c.generation_id for c in claimed.candidates]
    refused(compare, {"choice": 10_000}, r"choice 10000 is not one of the shown outputs")
    refused(compare, {"choice": "tie"}, r"ties are not allowed")
    refused(compare, {"ranking": ids}, r"needs the field 'choice'")
    q.submit(ann, compare, {"choice": ids[1]})

    claimed = q.claim(ann, kinds=["rank"])
    ids = [c.generation_id for c in claimed.candidates]
    refused(rank, {"ranking": ids[:2]}, r"must be a permutation of the shown outputs")
    refused(rank, {"ranking": [ids[0], ids[0], ids[1]]}, r"permutation")
    refused(rank, {"ranking": [*ids[:2], 10_000]}, r"permutation")
    q.submit(ann, rank, {"ranking": ids[::-1]})

    assert q.claim(ann, kinds=["edit"]).task_id == edit
    refused(edit, {"text": "   "}, r"the edited text is empty")
    refused(edit, {"text": 7}, r"the edited text must be text, got int")
    q.submit(ann, edit, {"text": "fixed"})

    values = {a.task_id: a.value for t in (rate, compare, rank, edit) for a in _annotations(store, t)}
    assert values[rate] == {"rating": 5} and values[edit] == {"text": "fixed"}
    assert values[rank] == {"ranking": ids[::-1]}
    assert q.status().human_annotations == 4


def test_submit_needs_a_claim_and_an_existing_task(queue: Queue) -> None:
    tid = queue.add_comparison("Q", ["a", "b"])
    ann = queue.ensure_annotator("ann")
    with pytest.raises(NotAssigned, match=f"task {tid} is not assigned"):
        queue.submit(ann, tid, {"choice": "tie"})
    with pytest.raises(NotFoundError, match="task 999999 does not exist"):
        queue.submit(ann, 999_999, {"choice": "tie"})
    claimed = queue.claim(ann)
    queue.release(ann, tid)
    with pytest.raises(NotAssigned):
        queue.submit(ann, tid, _choice(claimed))


def test_higher_priority_is_served_first(queue: Queue) -> None:
    low = queue.add_comparison("low", ["a", "b"], priority=0)
    high = queue.add_comparison("high", ["a", "b"], priority=5)
    mid = queue.add_comparison("mid", ["a", "b"], priority=1)
    also_low = queue.add_comparison("also low", ["a", "b"], priority=0)
    ann = queue.ensure_annotator("ann")
    served = []
    while (claimed := queue.claim(ann)) is not None:
        served.append(claimed.task_id)
        queue.submit(ann, claimed.task_id, _choice(claimed))
    assert served == [high, mid, low, also_low], "priority first, then first come first served"


def test_round_and_kind_filters(store: Store, queue: Queue) -> None:
    from prefloop.feedback.store.models import Round

    with store.session() as s:
        r1, r2 = Round(number=1), Round(number=2)
        s.add_all([r1, r2])
        s.flush()
        r1_id, r2_id = r1.id, r2.id
    in_r1 = queue.add_comparison("r1", ["a", "b"], round_id=r1_id, priority=1)
    in_r2 = queue.add_rating("r2", "a", round_id=r2_id)
    ann = queue.ensure_annotator("ann")
    assert queue.claim(ann, round_id=r2_id).task_id == in_r2
    assert queue.claim(ann, round_id=r1_id).task_id == in_r1, "a lease in another round does not block"
    assert queue.claim(ann, round_id=r2_id).task_id == in_r2, "each round's held lease comes back"
    assert queue.claim(ann, kinds=["rank"]) is None, "a held lease of another kind is not returned"
    assert queue.claim(ann, kinds=["rate", "compare"]).task_id == in_r2, "the oldest held lease that fits"
    assert queue.claim(ann, kinds=["compare"]).task_id == in_r1
    assert queue.progress(ann, round_id=r1_id)["remaining"] == 1
    with pytest.raises(QueueError, match="unknown task kind 'judge'"):
        queue.claim(ann, kinds=["judge"])


def test_a_claim_walks_the_claim_index_instead_of_sorting_open_tasks(store: Store, queue: Queue) -> None:
    """The query plan behind :meth:`Queue.claim`: ordered by the (status, priority DESC, id)
    index, so that a claim stops at the first free task however many are open; on PostgreSQL
    the rest of the one-statement claim reaches tasks and outputs by primary key, never by a scan."""
    with store.session() as s:
        for i in range(1000):
            queue.add_task("compare", queue.add_generations(f"p{i}", ["a", "b"], session=s), session=s)
    ann = queue.ensure_annotator("ann")
    store.analyze()
    pg = store.dialect == "postgresql"
    now = utcnow()
    statement = queue_sql.claim_pg((False, 0)) if pg else queue_sql.next_task((False, 0))
    compiled = statement._compiled(store.engine.dialect)
    values = statement._args(compiled, {"now": now, "annotator": ann, "expires": now + dt.timedelta(minutes=5)})
    with store.transaction() as conn:
        cursor = conn.connection.cursor()
        if pg:
            cursor.execute("EXPLAIN " + compiled.sql, values)  # not run: EXPLAIN without ANALYZE
            plan = "\n".join(r[0] for r in cursor.fetchall())
            search = plan[plan.index("CTE pick"):plan.index("CTE waited")]
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + compiled.sql, values)
            plan = search = "\n".join(r[-1] for r in cursor.fetchall())
    assert "ix_tasks_claim" in search, plan
    assert "Sort" not in search and "TEMP B-TREE" not in search, plan
    assert "Seq Scan on tasks" not in plan and "Seq Scan on generations" not in plan, plan
    assert queue.claim(ann).task_id == 1


# ---------------------------------------------------------------------------------------- record
def test_record_judges_do_not_fill_overlap_humans_do_and_history_is_kept(store: Store, queue: Queue) -> None:
    with store.session() as s:
        gen_a, gen_b = queue.add_generations("Q", ["a", "b"], session=s)
        tid = queue.add_task("compare", [gen_a, gen_b], session=s)
    judge = queue.ensure_annotator("judge-1", kind="judge")
    human = queue.ensure_annotator("imported-human")
    with pytest.raises(QueueError, match="exists as a judge"):
        queue.ensure_annotator("judge-1")

    jid, changed = queue.record(judge, tid, {"choice": gen_a}, rationale="A is kinder", cost=0.01)
    assert changed
    assert _task(store, tid).n_done == 0, "a judge verdict does not use up a human slot"
    assert queue.record(judge, tid, {"choice": gen_a}, rationale="A is kinder") == (jid, False)
    assert queue.record(judge, tid, {"choice": "tie"}, rationale="on reflection") == (jid, True)
    (row,) = [a for a in _annotations(store, tid) if a.annotator_id == judge]
    assert row.value == {"choice": "tie"}
    assert [h["value"] for h in row.history] == [{"choice": gen_a}]
    with pytest.raises(InvalidAnswer):
        queue.record(judge, tid, {"choice": 10_000})

    hid, changed = queue.record(human, tid, {"choice": gen_a})
    assert changed and hid != jid
    task = _task(store, tid)
    assert (task.n_done, task.status) == (1, "complete"), "a human record counts toward overlap"
    assert queue.record(human, tid, {"choice": "tie"})[1] is True
    assert _task(store, tid).n_done == 1, "updating a human answer does not count it twice"
    assert queue.claim(queue.ensure_annotator("late-comer")) is None
    st = queue.status()
    assert (st.human_annotations, st.judge_annotations) == (1, 1)
    with pytest.raises(NotFoundError):
        queue.record(human, 999_999, {"choice": "tie"})


# ---------------------------------------------------------------------------------------- concurrency
def _race_worker(url: str, name: str, overlap: int, barrier, results) -> None:  # noqa: ANN001
    """One annotator in its own process with its own connection: claim and submit until empty."""
    store = Store(url)
    q = Queue(store, overlap=overlap, lease_seconds=600)
    me = q.ensure_annotator(name)
    barrier.wait(timeout=120)
    receipts = []
    try:
        while (claimed := q.claim(me)) is not None:
            key = f"{name}:{claimed.task_id}"
            r = q.submit(me, claimed.task_id, {"choice": claimed.candidates[0].generation_id}, idempotency_key=key)
            receipts.append((claimed.task_id, me, r.annotation_id, r.duplicate))
    finally:
        store.dispose()
        results.put((name, receipts))


def test_real_processes_claiming_at_once_get_different_slots(store: Store, db_url: str) -> None:
    n_workers, n_tasks, overlap = 6, 40, 3
    q = Queue(store, overlap=overlap)
    with store.session() as s:
        for i in range(n_tasks):
            q.add_task("compare", q.add_generations(f"prompt {i}", [f"a{i}", f"b{i}"], session=s), session=s)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n_workers), ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(db_url, f"worker{i}", overlap, barrier, results))
        for i in range(n_workers)
    ]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    receipts = [r for rs in got.values() for r in rs]

    pairs = Counter((task_id, annotator) for task_id, annotator, _, _ in receipts)
    assert max(pairs.values()) == 1, "a task was served twice to one annotator"
    assert not any(dup for *_, dup in receipts), "no fresh submit may look like a retry"
    assert len(receipts) == n_tasks * overlap, "every slot was filled exactly once"
    assert len({ann_id for _, _, ann_id, _ in receipts}) == len(receipts)
    assert sum(1 for rs in got.values() if rs) >= 2, "the race needs at least two active workers"
    with store.session() as s:
        rows = s.execute(select(Annotation.id, Annotation.task_id, Annotation.annotator_id, Annotation.late)).all()
        tasks = s.execute(select(Task.id, Task.n_done, Task.status)).all()
        leases = s.scalar(select(func.count()).select_from(Lease))
    assert sorted(r.id for r in rows) == sorted(ann_id for _, _, ann_id, _ in receipts), "nothing lost or extra"
    assert Counter(r.task_id for r in rows) == {t.id: overlap for t in tasks}
    assert all((t.n_done, t.status) == (overlap, "complete") for t in tasks)
    assert not any(r.late for r in rows)
    assert leases == 0


def test_a_withdrawn_human_answer_reopens_its_slot(store):
    """submitted → skipped through record() (e.g. discarded in Argilla) gives the slot back."""
    from prefloop.feedback.store.models import Task

    q = Queue(store, overlap=1)
    task = q.add_comparison("p", ["a", "b"])
    human = q.ensure_annotator("argilla:ann")
    first = q.record(human, task, {"choice": "tie"})
    with store.session() as s:
        assert (s.get(Task, task).n_done, s.get(Task, task).status) == (1, "complete")
    q.record(human, task, None, status="skipped")
    with store.session() as s:
        t = s.get(Task, task)
        assert (t.n_done, t.status) == (0, "open")
    assert q.record(human, task, {"choice": "tie"})[0] == first[0]
    with store.session() as s:
        assert (s.get(Task, task).n_done, s.get(Task, task).status) == (1, "complete")


# ---------------------------------------------------------------------------------------- round trips
class _Wire:
    """What a store's connections send, as the driver sees it: PostgreSQL through libpq's trace of
    the protocol (each Query or Sync message ends one round trip), SQLite through its statement trace."""

    def __init__(self, path) -> None:  # noqa: ANN001
        self.path, self.pg_conns, self.sqlite = path, [], []
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.read = 0

    def connect(self, dbapi_connection, _record) -> None:  # noqa: ANN001 - a pool "connect" event
        if hasattr(dbapi_connection, "pgconn"):
            self.pg_conns.append(dbapi_connection.pgconn)
            self._trace(dbapi_connection.pgconn)
        else:
            dbapi_connection.set_trace_callback(self.sqlite.append)

    def _trace(self, pgconn) -> None:  # noqa: ANN001
        pgconn.trace(os.dup(self.fd))  # libpq writes through a stream of its own on this descriptor
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def since_last(self) -> list[str]:
        """PostgreSQL: the messages sent since the last call; SQLite: the statements."""
        if not self.pg_conns:
            out, self.sqlite[:] = list(self.sqlite), []
            return out
        for c in self.pg_conns:
            c.untrace()  # flushes libpq's stream
        with open(self.path) as f:
            f.seek(self.read)
            lines = f.read().splitlines()
            self.read = f.tell()
        for c in self.pg_conns:
            self._trace(c)
        return [line.split("\t")[2] for line in lines if line.startswith("F\t")]


def test_a_claim_and_a_submit_are_one_round_trip_each_on_postgresql(db_url: str, store: Store, tmp_path) -> None:  # noqa: ANN001
    """PostgreSQL: a claim and a submit are one statement each, sent without BEGIN, COMMIT or a
    pool pre-ping. SQLite: each is one ``BEGIN IMMEDIATE`` transaction."""
    wire = _Wire(tmp_path / "wire.trace")
    event.listen(Pool, "connect", wire.connect)
    mine = Store(db_url)  # its connections are all made under the trace
    try:
        q = Queue(mine, overlap=1)
        for i in range(3):
            q.add_comparison(f"Q{i}", ["a", "b"])
        warm, ann = q.ensure_annotator("warm"), q.ensure_annotator("ann")
        first = q.claim(warm)  # connections made, statements prepared
        q.submit(warm, first.task_id, _choice(first), idempotency_key="w")
        wire.since_last()
        claimed = q.claim(ann)
        claim_sent = wire.since_last()
        receipt = q.submit(ann, claimed.task_id, _choice(claimed), idempotency_key="k")
        submit_sent = wire.since_last()
        elsewhere = Queue(mine, overlap=1)  # a submit whose claim ran in another process
        other = q.claim(warm)
        wire.since_last()
        elsewhere.submit(warm, other.task_id, _choice(other), idempotency_key="e")
        elsewhere_sent = wire.since_last()
    finally:
        event.remove(Pool, "connect", wire.connect)
        mine.dispose()
    assert receipt.annotation_id and not receipt.duplicate
    ends_round_trip = ("Query", "Sync")
    if store.dialect == "postgresql":
        assert [m for m in claim_sent if m in ends_round_trip] == ["Sync"], claim_sent
        assert [m for m in submit_sent if m in ends_round_trip] == ["Sync"], submit_sent
        assert [m for m in elsewhere_sent if m in ends_round_trip] == ["Sync", "Sync"], elsewhere_sent  # the task, then the submit
    else:
        for sent in (claim_sent, submit_sent):
            assert sent[0] == "BEGIN IMMEDIATE" and sent[-1] == "COMMIT", sent
            assert sum(s.startswith("BEGIN") for s in sent) == 1, sent


def test_a_claim_that_waited_for_a_task_another_claim_filled_gets_nothing(store: Store) -> None:
    """The last slot of the only open task is being taken by a claim still in flight. A claim that
    waits for it must then see that lease and answer ``None``, not take a slot that is gone
    (PostgreSQL: its statement's snapshot predates the lease; see :mod:`.store.queue_sql`)."""
    q = Queue(store, overlap=2, lease_seconds=60)
    tid = q.add_comparison("Q", ["a", "b"])
    alice, bob, carol = (q.ensure_annotator(n) for n in ("alice", "bob", "carol"))
    assert q.claim(alice).task_id == tid
    outcome: dict = {}

    def claim() -> None:
        outcome["claimed"] = q.claim(bob)

    worker = threading.Thread(target=claim)
    with store.engine.connect() as busy:
        tx = busy.begin()
        try:  # what carol's claim does: lock and mark the task, insert her lease
            busy.execute(update(Task).where(Task.id == tid).values(n_done=Task.n_done))
            now = utcnow()
            busy.execute(Lease.__table__.insert().values(task_id=tid, annotator_id=carol, created_at=now,
                                                         expires_at=now + dt.timedelta(minutes=1)))
            worker.start()
            wait_until(lambda: not worker.is_alive() or blocked_by(store, busy, worker), "the claim to reach the lock")
        finally:
            tx.commit()
    worker.join(timeout=60)
    assert outcome["claimed"] is None, "the claim took a slot that carol's lease had filled"
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Lease).where(Lease.task_id == tid)) == 2


def test_claims_and_submits_survive_a_connection_the_server_dropped(store: Store) -> None:
    """PostgreSQL hands the one-statement claim and submit their connections without a pre-ping: a
    connection the server has closed fails once, and the statement runs again on a new one."""
    if store.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to drop a connection")
    q = Queue(store, overlap=1)
    tasks = [q.add_comparison(f"Q{i}", ["a", "b"]) for i in range(2)]
    ann = q.ensure_annotator("ann")

    def drop_the_hot_connection() -> int:
        with store.autocommit() as conn:  # claims and submits run one at a time here: always this connection
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with store.engine.connect() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

        def gone() -> bool:  # a transaction sees one snapshot of pg_stat_activity: a new one each time
            with store.engine.connect() as probe:
                return not probe.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar()

        wait_until(gone, "the backend to end")
        return pid

    for tid in tasks:
        drop_the_hot_connection()
        claimed = q.claim(ann)
        assert claimed is not None and claimed.task_id == tid
        drop_the_hot_connection()
        receipt = q.submit(ann, tid, _choice(claimed), idempotency_key=f"k{tid}")
        assert not receipt.duplicate and [a.id for a in _annotations(store, tid)] == [receipt.annotation_id]
