"""Judge trust (wrong side vs blind ties, Wilson intervals), the allocation policies, priorities
recomputed as labels arrive, and untrusted judges' labels kept out of training."""

from __future__ import annotations

import math

import pytest

from prefloop.feedback.config import AggregationConfig
from prefloop.feedback.export import build_dpo_dataset
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.models import Round, Task
from prefloop.judges.config import JudgesConfig, SelectionConfig, TrustConfig
from prefloop.judges.selection import PriorityRefresher, interleave, scores, update_priorities
from prefloop.judges.trust import UNMEASURED, UNTRUSTED, TrustTable, assess, measure_trust, wilson

LOOSE = TrustConfig(min_n=5, threshold=0.4)


def wilson_by_hand(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return mid - half, mid + half


def test_wilson_interval_values() -> None:
    assert wilson(8, 10) == pytest.approx((0.4901625, 0.9433178), abs=1e-6)  # the textbook example
    assert wilson(0, 0) is None
    lo, hi = wilson(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(wilson_by_hand(10, 10)[0], abs=1e-6)
    assert wilson(3, 40) == pytest.approx(wilson_by_hand(3, 40), abs=1e-6)


@pytest.fixture
def q(store):
    return Queue(store, overlap=1, lease_seconds=60)


def gens(q: Queue, task_id: int) -> list[int]:
    with q.store.session() as s:
        return list(s.get(Task, task_id).generation_ids)


def human_says(q: Queue, human: int, task_id: int, choice: int | str) -> None:
    q.record(human, task_id, {"choice": choice})


def judge_says(q: Queue, judge: int, task_id: int, choice: int | str, *, consistent: bool = True) -> None:
    q.record(judge, task_id, {"choice": choice}, confidence=0.9, meta={"consistent": consistent, "prob_a": 0.5})


def build_labels(q: Queue) -> dict[str, list[int]]:
    """12 human-labelled compare tasks (10 decided for the first output, 2 ties) and two judges:

    - ``blind`` agrees on 6 decided, ties 3 humans decided (plus one flipped verdict = a tie),
      ties one human tie and chooses on the other: a judge that cannot see what humans decided on;
    - ``contrary`` agrees on 2, picks the other side on 8 and ties both human ties.
    """
    human = q.ensure_annotator("alice")
    blind, contrary = q.ensure_annotator("blind", kind="judge"), q.ensure_annotator("contrary", kind="judge")
    tasks = [q.add_comparison(f"p{i}", [f"a{i}", f"b{i}"]) for i in range(12)]
    for i, t in enumerate(tasks):
        first, second = gens(q, t)
        human_says(q, human, t, first if i < 10 else "tie")
        if i < 6:
            judge_says(q, blind, t, first)
        elif i < 9:
            judge_says(q, blind, t, "tie")
        elif i == 9:
            judge_says(q, blind, t, first, consistent=False)  # flipped under position swap: a tie
        elif i == 10:
            judge_says(q, blind, t, "tie")
        else:
            judge_says(q, blind, t, second)
        judge_says(q, contrary, t, first if i < 2 else second if i < 10 else "tie")
    # tasks only the judges saw: what training would take from them
    only_contrary = q.add_comparison("pc", ["x", "y"], overlap=0)
    judge_says(q, contrary, only_contrary, gens(q, only_contrary)[0])
    only_blind = q.add_comparison("pb", ["u", "v"], overlap=0)
    judge_says(q, blind, only_blind, gens(q, only_blind)[1])
    return {"tasks": tasks, "only_contrary": [only_contrary], "only_blind": [only_blind]}


def test_trust_splits_errors_into_wrong_side_and_blind_ties(q) -> None:
    build_labels(q)
    table = measure_trust(q.store, LOOSE)
    b, c = table[("blind", "compare")], table[("contrary", "compare")]
    assert (b.n, b.agree, b.wrong_side, b.blind_ties, b.chose_on_tie, b.ties) == (12, 7, 0, 4, 1, 5)
    assert (c.n, c.agree, c.wrong_side, c.blind_ties, c.chose_on_tie, c.ties) == (12, 4, 8, 0, 0, 2)
    assert b.rate == pytest.approx(7 / 12) and (b.low, b.high) == pytest.approx(wilson_by_hand(7, 12), abs=1e-6)
    assert b.verdict_low == pytest.approx(wilson_by_hand(6, 7)[0], abs=1e-6)  # where it chose: 6 of 7 right
    assert b.blind and not b.ties_trusted  # 4 of its 5 ties were decided by humans
    assert b.trusted, "its verdicts are right often enough (lower bound ≥ 0.4)"
    assert not c.blind and c.status == UNTRUSTED  # 2 of 10 decided verdicts right
    strict = measure_trust(q.store, TrustConfig(min_n=8, threshold=0.4))
    assert strict.status("blind", "compare") == UNMEASURED  # 7 decided verdicts < 8
    assert strict.status("nobody", "compare") == UNMEASURED


def test_untrusted_judge_labels_stay_out_of_training(q) -> None:
    labels = build_labels(q)
    untrusted = measure_trust(q.store, LOOSE).untrusted()
    assert untrusted == {("contrary", "compare")}
    agg = AggregationConfig(min_confidence=0)
    every = build_dpo_dataset(q.store, config=agg)
    kept = build_dpo_dataset(q.store, config=agg, exclude_judges=untrusted)
    judged = lambda ds: {tuple(r["task_ids"]): r["annotators"] for r in ds if r["source"] == "judge"}
    assert judged(every) == {tuple(labels["only_contrary"]): ["contrary"], tuple(labels["only_blind"]): ["blind"]}
    assert judged(kept) == {tuple(labels["only_blind"]): ["blind"]}
    assert len(every) - len(kept) == 1  # the human pairs are all still there


def task(tid: int, verdicts: list[dict], kind: str = "compare") -> dict:
    return {"id": tid, "kind": kind, "scale": None, "verdicts": verdicts}


def verdict(judge: str, choice: str, prob_a: float, consistent: bool = True) -> dict:
    return {"judge": judge, "status": "submitted", "value": {"choice": choice}, "confidence": None,
            "meta": {"prob_a": prob_a, "consistent": consistent}}


def order(result: dict[int, tuple[float, dict]]) -> list[int]:
    return sorted(result, key=lambda i: (-result[i][0], i))


def trusted_table() -> TrustTable:
    from collections import Counter

    cfg = TrustConfig(min_n=3, threshold=0.3)
    return TrustTable({
        ("good", "compare"): assess("good", "compare", Counter(agree=9, tie_agree=9, wrong_side=1), cfg),
        ("blind", "compare"): assess("blind", "compare", Counter(agree=9, blind_tie=6), cfg),
        ("bad", "compare"): assess("bad", "compare", Counter(agree=1, wrong_side=9), cfg),
    })


def test_policies_order_constructed_tasks() -> None:
    tasks = [
        task(1, [verdict("good", "10", 0.95)]),  # a trusted, sure verdict: settled
        task(2, [verdict("good", "tie", 0.5)]),  # a trusted tie: settled too (not "unsure")
        task(3, [verdict("good", "20", 0.6)]),  # trusted but unsure
        task(4, [verdict("blind", "tie", 0.5)]),  # a blind judge's tie: unknown
        task(5, [verdict("bad", "30", 0.99)]),  # only an untrusted judge answered
        task(6, [verdict("good", "40", 0.95), verdict("blind", "41", 0.95)]),  # trusted judges disagree
        task(7, []),  # no judge at all
    ]
    table = trusted_table()
    assert all(s == 0.0 for s, _ in scores("fifo", tasks, SelectionConfig(policy="fifo")).values())
    r1 = order(scores("random", tasks, SelectionConfig(policy="random", seed=1)))
    assert r1 == order(scores("random", tasks, SelectionConfig(policy="random", seed=1)))
    assert r1 != order(scores("random", tasks, SelectionConfig(policy="random", seed=2)))
    unc = order(scores("uncertainty", tasks, SelectionConfig(policy="uncertainty")))
    assert unc.index(2) < unc.index(1) and unc.index(4) < unc.index(1) and 7 not in unc  # ties look unsure to it
    trust = scores("trust", tasks, SelectionConfig(policy="trust", exploration=0.0), table)
    got = order(trust)
    assert set(got[:3]) == {4, 5, 7}, "no trusted verdict first"
    assert got[3:5] == [6, 3], "then trusted judges disagreeing, then a trusted unsure verdict"
    assert set(got[5:]) == {1, 2}, "settled verdicts (a trusted tie included) last"
    assert trust[4][1]["no_trusted_verdict"] and not trust[2][1]["no_trusted_verdict"]


def test_trust_policy_exploration_share() -> None:
    tasks = [task(i, [verdict("good", "10", 0.95)]) for i in range(1, 9)] + [task(9, [])]
    cfg = SelectionConfig(policy="trust", exploration=0.25, seed=3)
    result = scores("trust", tasks, cfg, trusted_table())
    got = order(result)
    explored = [i for i in got if result[i][1]["explore"]]
    assert len(explored) == 2 and [got.index(i) for i in explored] == [3, 7]  # every 4th place
    assert got[0] == 9  # the task without a trusted verdict still leads
    assert interleave([1, 2, 3, 4], [4, 3, 2, 1], 0.5) == [1, 4, 2, 3]
    assert interleave([1, 2, 3], [3, 2, 1], 0.0) == [1, 2, 3]


def test_priorities_follow_labels_as_they_arrive(store) -> None:
    """Before anyone checked judge ``fmt``, its tie looks like doubt and is served first. Once human
    labels show that its ties and its choices match theirs, the tie is settled: the next claim goes
    to the task only an unchecked judge answered."""
    q = Queue(store, overlap=1, lease_seconds=60)
    with store.session() as s:
        r = Round(number=1)
        s.add(r)
        s.flush()
        rid = r.id
    fmt, other_judge = q.ensure_annotator("fmt", kind="judge"), q.ensure_annotator("other", kind="judge")
    alice, bob, carol = (q.ensure_annotator(n) for n in ("alice", "bob", "carol"))
    tied = q.add_comparison("tied", ["t1", "t2"], round_id=rid)
    judge_says(q, fmt, tied, "tie")
    unchecked = q.add_comparison("unchecked", ["u1", "u2"], round_id=rid)
    q.record(other_judge, unchecked, {"choice": gens(q, unchecked)[0]}, confidence=0.9,
             meta={"consistent": True, "prob_a": 0.95})
    evidence = [q.add_comparison(f"e{i}", [f"a{i}", f"b{i}"]) for i in range(8)]  # outside the round
    for i, t in enumerate(evidence):
        judge_says(q, fmt, t, gens(q, t)[0] if i < 4 else "tie")
    cfg = JudgesConfig(selection=SelectionConfig(policy="trust", exploration=0.0, recompute_every=4),
                       trust=TrustConfig(min_n=3, threshold=0.3))
    update_priorities(store, round_id=rid, weights=cfg.selection, trust=cfg.trust)
    first = q.claim(bob, round_id=rid)
    assert first is not None and first.task_id == tied, "unchecked: the tie looks like doubt"
    refresher = PriorityRefresher(store, cfg)
    for i, t in enumerate(evidence):  # humans agree with fmt's choices and with its ties
        q.record(alice, t, {"choice": gens(q, t)[0] if i < 4 else "tie"})
        refresher.label_arrived(t)
    assert refresher.refreshes == 0, "labels outside a round refresh nothing"
    q.release(bob, tied)
    for _ in range(4):
        refresher.label_arrived(tied)  # four labels counted in the round: one refresh
    assert refresher.refreshes == 1
    table = measure_trust(store, cfg.trust)
    assert table[("fmt", "compare")].trusted and table[("fmt", "compare")].ties_trusted
    nxt = q.claim(carol, round_id=rid)
    assert nxt is not None and nxt.task_id == unchecked, "a trusted tie is settled: the unchecked verdict comes first"
    with store.session() as s:
        assert s.get(Task, tied).meta["selection"]["no_trusted_verdict"] is False
        assert s.get(Task, unchecked).meta["selection"]["no_trusted_verdict"] is True


def test_stopping_rule_asks_only_where_a_label_is_worth_its_price(q) -> None:
    from prefloop.judges.config import StoppingConfig
    from prefloop.judges.stopping import decide

    labels = build_labels(q)  # blind: 6 of 7 choices right, 4 of 5 ties hid a human decision
    settled = q.add_comparison("s", ["s1", "s2"])
    judge_says(q, q.ensure_annotator("blind", kind="judge"), settled, gens(q, settled)[0])
    tied = q.add_comparison("t", ["t1", "t2"])
    judge_says(q, q.ensure_annotator("blind", kind="judge"), tied, "tie")
    unknown = q.add_comparison("u", ["u1", "u2"])  # no judge at all
    cfg = JudgesConfig(trust=LOOSE, stopping=StoppingConfig(enabled=True, pair_value=0.5, label_seconds=36))
    ids = [settled, tied, unknown]
    d = decide(q.store, cfg, 30.0, ids)  # price: 30/h × 36 s = 0.30
    assert d.price == pytest.approx(0.30)
    assert d.values == pytest.approx({settled: 0.5 / 7, tied: 0.5 * 4 / 5, unknown: 0.5})
    assert d.worth == [tied, unknown] and d.below == [settled]
    cheap = decide(q.store, cfg, 1.0, ids)  # at 1/h every label is worth asking
    assert cheap.worth == ids and cheap.to_metrics()["not_asked"] == 0
    assert labels["only_blind"]


def test_the_server_recomputes_priorities_as_submits_arrive(db_url, tmp_path) -> None:  # noqa: ANN001
    """Through the real HTTP API: after every second submit the round's open tasks are reordered,
    and the next claim follows the order the new labels taught."""
    from serverkit import serve_project

    judges = {"selection": {"policy": "trust", "exploration": 0.0, "recompute_every": 2},
              "trust": {"min_n": 2, "threshold": 0.0}}
    with serve_project(tmp_path / "proj", db_url, queue={"overlap": 1}, judges=judges) as served:
        q = served.queue
        with served.store.session() as s:
            r = Round(number=1)
            s.add(r)
            s.flush()
            rid = r.id
        fmt, other = q.ensure_annotator("fmt", kind="judge"), q.ensure_annotator("other", kind="judge")
        tied = q.add_comparison("tied", ["t1", "t2"], round_id=rid)
        judge_says(q, fmt, tied, "tie")
        unchecked = q.add_comparison("unchecked", ["u1", "u2"], round_id=rid)
        q.record(other, unchecked, {"choice": gens(q, unchecked)[0]}, confidence=0.9, meta={"consistent": True, "prob_a": 0.95})
        evidence = [q.add_comparison(f"e{i}", [f"a{i}", f"b{i}"], round_id=rid, priority=10) for i in range(4)]
        truth = {}
        for i, t in enumerate(evidence):
            truth[t] = gens(q, t)[0] if i < 2 else "tie"
            judge_says(q, fmt, t, truth[t])
        update_priorities(served.store, round_id=rid, weights=SelectionConfig(**judges["selection"]),
                          trust=TrustConfig(**judges["trust"]))
        with served.store.session() as s:
            assert s.get(Task, tied).priority > s.get(Task, unchecked).priority  # unchecked: a tie looks like doubt
        alice = served.client(served.token("alice"))
        for _ in evidence:  # the evidence comes first (priority 10); alice agrees with fmt everywhere
            t = alice.post("/api/tasks/next", json={"round_id": rid}).json()
            assert t["task_id"] in truth
            r = alice.post(f"/api/tasks/{t['task_id']}/submit", json={"value": {"choice": truth[t["task_id"]]}})
            assert r.status_code == 200
        nxt = served.client(served.token("bob")).post("/api/tasks/next", json={"round_id": rid}).json()
        assert nxt["task_id"] == unchecked, "fmt's tie is now trusted: the unchecked verdict comes first"
