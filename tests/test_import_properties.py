"""Property tests (hypothesis) for the importers (JSONL, CSV, Parquet) and ``queue add``.

Arbitrary text and structure either round-trips exactly (what is stored equals what was in the
file) or fails with one line naming the file and the line (or row), and writes nothing. On SQLite
and PostgreSQL. Example counts are bounded and derandomized: the same examples on every run.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from serverkit import make_project
from sqlalchemy import func, select

from prefloop.errors import DataError
from prefloop.feedback.cli import queue_add
from prefloop.feedback.importer import import_prompts
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Base, Generation, Prompt, Task

SETTINGS = settings(derandomize=True, database=None, deadline=None, max_examples=30,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: short texts over every code point (surrogates, NUL, controls, bidi), plus hand-picked hard cases.
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=12),
    st.text(max_size=12),
    st.sampled_from(["\ud800", "a\x00b", "\u200b\ufeff", " ", "Berlin.\x1b[2K\x1b[1GParis.", "\u202eabc", "👩‍👩‍👧 ok",
                     "x,y", '"quoted"', "a\r\nb", "\ufeffBOM", "\x85", "1e400", "NaN"]),
)
#: text a UTF-8 file can hold (no lone surrogates).
FILE_TEXT = TEXT.filter(lambda s: not re.search("[\ud800-\udfff]", s))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def reset(store: Store) -> None:
    """Each example starts from an empty store (the fixture's store is shared by all examples)."""
    with store.transaction() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def written(store: Store) -> tuple[int, int, int]:
    with store.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Prompt, Generation, Task))


def assert_one_line_naming(exc: DataError, path: Path, store: Store) -> None:
    event("refused")
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert re.match(rf"^{re.escape(str(path))}(:\d+: | row \d+: |: )", message), message
    assert written(store) == (0, 0, 0), "a refused file writes nothing"


def stored_prompts(store: Store) -> list[tuple]:
    with store.session() as s:
        return [(p.text, p.reference, p.tags, p.meta, p.split) for p in s.scalars(select(Prompt).order_by(Prompt.id))]


def first_of_each_prompt(expected: list[tuple]) -> list[tuple]:
    """Re-importing a prompt does not duplicate it: the first row with a given text wins."""
    seen: dict[str, tuple] = {}
    for row in expected:
        seen.setdefault(row[0], row)
    return list(seen.values())


# ------------------------------------------------------------------------------ JSONL
ROWS = st.lists(
    st.fixed_dictionaries(
        {"prompt": TEXT},
        optional={"reference": TEXT, "tags": st.lists(TEXT, max_size=3), "meta": st.dictionaries(TEXT, JSON, max_size=3),
                  "split": st.sampled_from(["train", "eval", "test"]), "extra": JSON},
    ),
    min_size=1, max_size=4,
)


@SETTINGS
@given(rows=ROWS)
def test_jsonl_import_round_trips_or_fails_on_one_line(store: Store, tmp_path: Path, rows: list[dict]) -> None:
    reset(store)
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ASCII escapes carry surrogates; NaN as a literal
    try:
        import_prompts(store, f)
    except DataError as exc:
        assert_one_line_naming(exc, f, store)
        return
    expected = [(r["prompt"], r.get("reference"), sorted(set(r.get("tags") or [])),
                 {**({"extra": r["extra"]} if "extra" in r else {}), **(r.get("meta") or {})}, r.get("split") or "train")
                for r in rows]
    assert stored_prompts(store) == first_of_each_prompt(expected)


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"prompt": st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=20)
                                            .filter(str.strip)}), min_size=1, max_size=4))
def test_ordinary_text_is_always_accepted(store: Store, tmp_path: Path, rows: list[dict]) -> None:
    """The other half of the property: a policy that refused everything would pass the first test."""
    reset(store)
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    import_prompts(store, f)
    assert [p[0] for p in stored_prompts(store)] == list(dict.fromkeys(r["prompt"] for r in rows))


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_arbitrary_bytes_never_raise_anything_but_a_one_line_error(store: Store, tmp_path: Path, data: bytes, suffix: str) -> None:
    reset(store)
    f = tmp_path / f"p{suffix}"
    f.write_bytes(data)
    try:
        import_prompts(store, f)
    except DataError as exc:
        assert_one_line_naming(exc, f, store)


# ------------------------------------------------------------------------------ CSV
@SETTINGS
@given(cells=st.lists(st.tuples(FILE_TEXT, FILE_TEXT), min_size=1, max_size=4), bom=st.booleans(),
       newline=st.sampled_from(["\r\n", "\n"]))
def test_csv_import_round_trips_or_fails_on_one_line(store: Store, tmp_path: Path, cells, bom: bool, newline: str) -> None:  # noqa: ANN001
    reset(store)
    f = tmp_path / "p.csv"
    with f.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator=newline)
        w.writerow(["prompt", "reference"])
        w.writerows(cells)
    try:
        import_prompts(store, f)
    except DataError as exc:
        assert_one_line_naming(exc, f, store)
        return
    expected = [(p, r or None, [], {}, "train") for p, r in cells]  # an empty cell is a missing field
    assert stored_prompts(store) == first_of_each_prompt(expected)


# ------------------------------------------------------------------------------ Parquet
@SETTINGS
@given(rows=st.lists(st.tuples(st.one_of(st.none(), FILE_TEXT), st.one_of(st.none(), st.floats()), st.integers(-2**63, 2**63 - 1)),
                     min_size=1, max_size=4))
def test_parquet_import_round_trips_or_fails_on_one_line(store: Store, tmp_path: Path, rows) -> None:  # noqa: ANN001
    import pyarrow as pa
    import pyarrow.parquet as pq

    reset(store)
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": pa.array([r[0] for r in rows], pa.string()),
                             "score": pa.array([r[1] for r in rows], pa.float64()),
                             "n": pa.array([r[2] for r in rows], pa.int64())}), f)
    try:
        import_prompts(store, f)
    except DataError as exc:
        assert_one_line_naming(exc, f, store)
        return
    expected = [(p, None, [], {"score": x, "n": n}, "train") for p, x, n in rows]
    assert stored_prompts(store) == first_of_each_prompt(expected)


# ------------------------------------------------------------------------------ queue add
TASKS = st.lists(
    st.one_of(
        st.fixed_dictionaries({"prompt": TEXT, "outputs": st.lists(TEXT, min_size=2, max_size=2, unique=True)},
                              optional={"priority": st.floats()}),
        st.fixed_dictionaries({"prompt": TEXT, "outputs": st.lists(TEXT, min_size=1, max_size=1),
                               "kind": st.sampled_from(["rate", "edit"])}, optional={"priority": st.integers()}),
        st.fixed_dictionaries(  # anything
            {"prompt": TEXT, "outputs": st.one_of(st.lists(TEXT, max_size=3), JSON)},
            optional={"kind": st.one_of(st.sampled_from(["compare", "rate", "rank", "edit", "bogus"]), JSON),
                      "priority": st.one_of(st.floats(), st.integers(), JSON)},
        ),
    ),
    min_size=1, max_size=3,
)


@pytest.fixture
def project(tmp_path: Path, db_url: str):  # noqa: ANN201
    p = make_project(tmp_path / "proj", db_url)
    yield p
    p.store.dispose()


@SETTINGS
@given(rows=TASKS)
def test_queue_add_round_trips_or_fails_on_one_line(project, rows: list[dict]) -> None:  # noqa: ANN001
    store = project.store
    reset(store)
    f = project.root / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        queue_add(f, kind="compare", overlap=None, priority=0.0, project_dir=project.root, quiet=True, verbose=False)
    except DataError as exc:
        assert_one_line_naming(exc, f, store)
        return
    with store.session() as s:
        tasks = s.scalars(select(Task).order_by(Task.id)).all()
        got = [(t.prompt.text, [s.get(Generation, g).text for g in t.generation_ids], t.kind, t.priority) for t in tasks]
    assert got == [(r["prompt"], r["outputs"], r.get("kind", "compare"), float(r.get("priority", 0.0))) for r in rows]
