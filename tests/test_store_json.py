"""JSON columns hold strict JSON on both databases: a NaN or an infinity is refused the same clear way
on SQLite as on PostgreSQL (which cannot store it), and nothing is written. Undefined numbers are
``None`` (JSON null) before they reach the store."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, insert, select

from prefloop.errors import PrefloopError
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Prompt, Round


def _rounds(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Round))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_json_is_refused_alike_on_both_databases(store: Store, bad: float) -> None:
    with pytest.raises(PrefloopError) as err:  # an ORM insert
        with store.session() as s:
            s.add(Round(number=1, config={}, metrics={"agreement": {"judge": {"kappa": bad}}}))
    message = str(err.value)
    assert "agreement.judge.kappa" in message and repr(bad) in message and "null" in message
    assert "\n" not in message and "SQL" not in message  # one line, no statement dump
    assert _rounds(store) == 0

    with store.session() as s:
        s.add(Round(number=1, config={}, metrics={"kappa": None, "agreement": 0.5}))
    with pytest.raises(PrefloopError, match=r"scores\[1\]"):  # an ORM update of a stored row
        with store.session() as s:
            r = s.scalar(select(Round).where(Round.number == 1))
            r.metrics = {**r.metrics, "scores": [0.25, bad]}
    with pytest.raises(PrefloopError, match=r"oracle_score"):  # a Core executemany (the bulk paths)
        with store.transaction() as conn:
            conn.execute(insert(Prompt), [
                {"text": "a", "content_hash": "a" * 64, "meta": {"oracle_score": 0.5}, "tags": []},
                {"text": "b", "content_hash": "b" * 64, "meta": {"oracle_score": bad}, "tags": []},
            ])
    with store.session() as s:  # nothing was written, and what was stored before is intact
        assert s.scalar(select(func.count()).select_from(Prompt)) == 0
        assert s.scalar(select(Round.metrics)) == {"kappa": None, "agreement": 0.5}


def test_finite_numbers_and_null_round_trip(store: Store) -> None:
    metrics = {"kappa": None, "alpha": -0.25, "big": 1e308, "tiny": 5e-324, "n": 2**62, "nested": [[0.1, None]]}
    with store.session() as s:
        s.add(Round(number=3, config={"learning_rate": 3e-4}, metrics=metrics))
    with store.session() as s:
        r = s.scalar(select(Round))
        assert (r.metrics, r.config) == (metrics, {"learning_rate": 3e-4})


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_config_number_must_be_finite(tmp_path, value: str) -> None:  # noqa: ANN001
    """A round stores its config snapshot as JSON: NaN or Infinity in prefloop.yaml is a config error."""
    from prefloop.config import load_config
    from prefloop.errors import ConfigError

    path = tmp_path / "prefloop.yaml"
    path.write_text(f"training:\n  generation:\n    temperature: {value}\n")
    with pytest.raises(ConfigError, match=r"training\.generation\.temperature: Input should be a finite number"):
        load_config(path)
