"""A round's control state is typed (``RoundState``) and stored apart from its reported metrics;
migration 0005 moves the control keys of rounds written before out of ``metrics`` and back."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import insert, select

from prefloop.feedback.store.db import Store, alembic_config
from prefloop.feedback.store.models import Round

#: a round 1 as the orchestrator stored it before 0005: control keys mixed into the metrics.
OLD_METRICS = {
    "loop_id": "ab12cd34ef",
    "transitions": [{"state": "created", "at": "2026-11-30T10:00:00+00:00"},
                    {"state": "generating", "at": "2026-11-30T10:00:01+00:00", "pid": 41},
                    {"state": "training", "at": "2026-11-30T10:09:00+00:00", "pid": 42, "resumed": True}],
    "seconds": {"generating": 12.5, "judging": 0.25},
    "train_prompt_ids": [3, 1, 2],
    "wait_tasks": [7, 8],
    "wait_started_at": 1796032801.5,
    "data_rounds": [2],
    "judging": {"style-rules": {"verdicts": 8, "cached": 0, "failed": 0, "cost": 0.0, "seconds": 0.1}},
    "tasks": {"compare": 8, "edit": 4},
    "datasets": {"dpo": {"rows": 5, "sha256": "d" * 64, "path": "/runs/round-1/datasets/dpo", "by_source": {"human": 5}},
                 "sft": {"rows": 0, "sha256": "e" * 64, "path": "/runs/round-1/datasets/sft", "by_source": {}}},
    "training": {"phases": {}, "notes": ["sft skipped: 0 example(s), fewer than 1"]},
    "eval": {"prompts": 4, "oracle_score": None},
}


def _alembic(store: Store, verb: str, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = alembic_config(store)
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def test_migration_0005_moves_control_keys_out_of_metrics_and_back(db_url: str) -> None:
    from prefloop.training.rounds import RoundState

    store = Store(db_url)
    try:
        _alembic(store, "upgrade", "0004")
        with store.engine.begin() as conn:  # the table as 0004 left it: no state_data column
            conn.execute(_old_insert(OLD_METRICS))
        _alembic(store, "upgrade", "head")
        with store.session() as s:
            row = s.scalar(select(Round))
            metrics, control = row.metrics, row.state_data
            state = RoundState.of(row)
        assert set(metrics) == {"judging", "tasks", "datasets", "training", "eval"}
        assert metrics["datasets"]["dpo"] == {"rows": 5, "sha256": "d" * 64, "by_source": {"human": 5}}
        assert control["transitions"] == OLD_METRICS["transitions"] and control["wait_tasks"] == [7, 8]
        assert control["datasets"]["sft"] == {"path": "/runs/round-1/datasets/sft", "sha256": "e" * 64, "rows": 0}
        # What the orchestrator reads back to resume, typed.
        assert state.state == "training" and state.loop_id == "ab12cd34ef"
        assert [t.resumed for t in state.transitions] == [False, False, True] and state.transitions[0].pid is None
        assert state.seconds == {"generating": 12.5, "judging": 0.25} and state.wait_started_at == 1796032801.5
        assert state.train_prompt_ids == [3, 1, 2] and state.data_rounds == [2]
        assert state.datasets["dpo"].path == "/runs/round-1/datasets/dpo" and state.datasets["dpo"].rows == 5
        assert state.to_json() == control  # stored as the orchestrator writes it

        _alembic(store, "downgrade", "0004")
        with store.engine.connect() as conn:
            (back,) = conn.execute(select(_old_rounds().c.metrics)).scalars().all()
        assert back == OLD_METRICS
    finally:
        store.dispose()


def _old_rounds() -> sa.TableClause:
    """The rounds table as revision 0004 has it."""
    return sa.table("rounds", sa.column("id", sa.Integer), sa.column("number", sa.Integer), sa.column("state", sa.String),
                    sa.column("config", sa.JSON), sa.column("metrics", sa.JSON), sa.column("created_at", sa.DateTime),
                    sa.column("updated_at", sa.DateTime))


def _old_insert(metrics: dict) -> sa.Insert:
    when = dt.datetime(2026, 11, 30, 10, 0, 0)
    return insert(_old_rounds()).values(number=1, state="training", config={}, metrics=copy.deepcopy(metrics),
                                        created_at=when, updated_at=when)


def test_round_state_validates_what_it_is_given() -> None:
    from pydantic import ValidationError

    from prefloop.training.rounds import RoundState

    st = RoundState(loop_id="x")
    st.entered("generating", resumed=True)
    st.add_seconds("generating", 1.23456)
    st.add_seconds("generating", 1.0)
    assert st.state == "generating" and st.transitions[-1].resumed and st.transitions[-1].pid is not None
    assert st.seconds == {"generating": 2.235}
    doc = st.to_json()
    assert "state" not in doc and doc["transitions"][0]["resumed"] is True and "wait_tasks" not in doc
    with pytest.raises(ValidationError):
        st.update(wait_tasks=["not a task id"])
    with pytest.raises(ValidationError):
        st.update(seconds={"training": float("nan")})  # the store holds strict JSON
    with pytest.raises(ValidationError):
        RoundState.model_validate({"loop_id": "x", "unknown_key": 1})


def test_every_working_state_has_a_runner() -> None:
    from prefloop.training.rounds import BASELINE_STATES, STATE_RUNNERS, STATES

    assert set(STATE_RUNNERS) == set(STATES) - {"created", "done"}
    assert set(BASELINE_STATES) <= set(STATES)
