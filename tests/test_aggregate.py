"""Aggregation: human > judge, majorities with visible disagreement, ratings, rankings, SFT targets."""

from __future__ import annotations

import pytest

from prefloop.feedback.aggregate import preferences, sft_targets
from prefloop.feedback.agreement import cohen_kappa, inter_annotator, judge_human_agreement, krippendorff_alpha
from prefloop.feedback.config import AggregationConfig
from prefloop.feedback.queue import Queue


@pytest.fixture
def q(store):
    return Queue(store, overlap=3, lease_seconds=60)


def answer(q, annotator, task_id, value):
    claimed = q.claim(annotator)
    assert claimed is not None and claimed.task_id == task_id
    q.submit(annotator, task_id, value)


def gens(q, task_id):
    with q.store.session() as s:
        from prefloop.feedback.store.models import Task

        return list(s.get(Task, task_id).generation_ids)


def test_human_majority_beats_judges_and_splits_stay_visible(q):
    humans = [q.ensure_annotator(n) for n in ("h1", "h2", "h3")]
    judge = q.ensure_annotator("judge", kind="judge")
    t1 = q.add_comparison("p1", ["a1", "b1"])
    t2 = q.add_comparison("p2", ["a2", "b2"], overlap=2)
    a1, b1 = gens(q, t1)
    a2, b2 = gens(q, t2)
    for h, v in zip(humans, [b1, b1, a1], strict=True):
        answer(q, h, t1, {"choice": v})
    answer(q, humans[0], t2, {"choice": a2})
    answer(q, humans[1], t2, {"choice": b2})
    q.record(judge, t1, {"choice": a1}, confidence=0.99, meta={"consistent": True})  # outvoted by humans
    prefs = {p.task_ids[0]: p for p in preferences(q.store, config=AggregationConfig(min_confidence=0))}
    assert t2 not in prefs  # 1–1 split: no pair, not silently resolved
    p = prefs[t1]
    assert (p.chosen_id, p.rejected_id, p.source, p.method) == (b1, a1, "human", "majority")
    assert p.confidence == pytest.approx(2 / 3) and p.n_annotators == 3 and sorted(p.annotators) == ["h1", "h2", "h3"]


def test_judges_alone_count_only_position_consistent_verdicts(q):
    j1, j2 = q.ensure_annotator("j1", kind="judge"), q.ensure_annotator("j2", kind="judge")
    t1 = q.add_comparison("p1", ["a", "b"])
    t2 = q.add_comparison("p2", ["c", "d"])
    a, _ = gens(q, t1)
    c, _ = gens(q, t2)
    for j in (j1, j2):
        q.record(j, t1, {"choice": a}, confidence=0.8, meta={"consistent": True})
    q.record(j1, t2, {"choice": c}, confidence=0.9, meta={"consistent": False})  # flipped under swap
    prefs = preferences(q.store, config=AggregationConfig(min_confidence=0))
    assert [(p.task_ids, p.chosen_id, p.source, p.method) for p in prefs] == [([t1], a, "judge", "judge-panel")]
    assert prefs[0].confidence == pytest.approx(0.8)


def test_ratings_give_best_vs_worst_above_margin_and_sft_targets(q):
    h = q.ensure_annotator("h")
    with q.store.session() as s:
        ids = q.add_generations("write a haiku", ["great", "ok", "bad"], session=s)
        tasks = [q.add_task("rate", [g], overlap=1, session=s) for g in ids]
        other = q.add_generations("second prompt", ["x", "y"], session=s)
        close = [q.add_task("rate", [g], overlap=1, session=s) for g in other]
    for t, r in zip(tasks + close, [5, 3, 1, 3, 4], strict=True):
        answer(q, h, t, {"rating": r})
    prefs = preferences(q.store, config=AggregationConfig(rating_margin=2, min_confidence=0))
    assert [(p.chosen_id, p.rejected_id, p.method) for p in prefs] == [(ids[0], ids[2], "rating")]
    assert prefs[0].confidence == pytest.approx(1.0)
    targets = sft_targets(q.store, config=AggregationConfig(sft_min_rating=4))
    assert sorted(t.text for t in targets) == ["great", "y"]


def test_rankings_and_edits(q):
    h1, h2 = q.ensure_annotator("h1"), q.ensure_annotator("h2")
    t = q.add_ranking("rank these", ["r1", "r2", "r3"], overlap=2)
    g = gens(q, t)
    answer(q, h1, t, {"ranking": [g[2], g[0], g[1]]})
    answer(q, h2, t, {"ranking": [g[2], g[1], g[0]]})
    e = q.add_edit("fix", "teh answer", overlap=1)
    answer(q, h1, e, {"text": "the answer"})
    (p,) = preferences(q.store)
    assert (p.chosen_id, p.method, p.confidence) == (g[2], "ranking", 1.0)
    assert p.rejected_id in (g[0], g[1])
    (sft,) = sft_targets(q.store)
    assert (sft.text, sft.method, sft.source) == ("the answer", "edit", "human")


def test_kappa_and_alpha_match_hand_computed_values():
    a = ["x", "x", "y", "y", "x", "y"]
    b = ["x", "y", "y", "y", "x", "x"]
    # p_o = 4/6, p_e = (3/6)(3/6) + (3/6)(3/6) = 1/2 → κ = (2/3 − 1/2)/(1/2) = 1/3
    assert cohen_kappa(a, b) == pytest.approx(1 / 3)
    # undefined statistics are None (JSON null, shown as n/a), never NaN
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # one category: chance agreement is 1, κ is 0/0
    assert cohen_kappa(["x"], ["y"]) is None  # one item
    units = [{"a": "x", "b": "x"}, {"a": "y", "b": "y"}, {"a": "x", "b": "x"}]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(1.0)
    assert krippendorff_alpha([{"a": "x"}], "nominal") is None  # no two coders overlap
    assert krippendorff_alpha([{"a": 3, "b": 3}, {"a": 3, "b": 3}], "ordinal") is None  # one value only


def test_inter_annotator_and_judge_agreement_with_and_without_ties(q):
    h1, h2 = q.ensure_annotator("h1"), q.ensure_annotator("h2")
    j = q.ensure_annotator("j", kind="judge")
    plan = [("first", "first", "first"), ("second", "second", "tie"), ("first", "second", "first"), ("tie", "tie", "second")]
    for i, (l1, l2, lj) in enumerate(plan):
        t = q.add_comparison(f"p{i}", [f"a{i}", f"b{i}"], overlap=2)
        a, b = gens(q, t)
        pick = {"first": a, "second": b, "tie": "tie"}
        answer(q, h1, t, {"choice": pick[l1]})
        answer(q, h2, t, {"choice": pick[l2]})
        q.record(j, t, {"choice": pick[lj]}, meta={"consistent": True})
    rep = inter_annotator(q.store, kind="compare")
    assert rep.n_tasks == 4 and rep.annotators == ["h1", "h2"]
    assert rep.pairs[0].observed == pytest.approx(3 / 4)
    (ja,) = judge_human_agreement(q.store)
    # task 3 (humans split) has no reference; of the other three the judge matches one (task 1)
    assert (ja.judge, ja.n) == ("j", 3)
    assert ja.agreement == pytest.approx(1 / 3)
    # without ties only task 1 remains (task 2: judge tie; task 4: humans tie)
    assert (ja.n_without_ties, ja.agreement_without_ties) == (1, 1.0)
