"""The experiment report's judge table: each judge's agreement with the human majority summed over
an arm's runs, and on the tasks every judge of the arm labelled (a reward model sees only held-out
human tasks, so its agreement is compared with the others' on those)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from roundkit import TINY_CONFIG

from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import open_store
from prefloop.feedback.store.models import Task
from prefloop.judges.trust import wilson


def _experiment(folder: Path):  # noqa: ANN202
    from prefloop.experiments import Experiment, load_spec

    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    spec = {"name": "judges", "task": "support-desk", "base": "tiny.yaml", "rounds": 1, "seeds": [1, 2],
            "humans": {"annotators": 1, "accuracy": 1.0}, "wandb": {"mode": "offline"},
            "arms": [{"name": "rules"}, {"name": "rules-rm"}]}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return Experiment(load_spec(folder / "spec.yaml"), folder / "out")


def _labels(run, rows: list[tuple[str, dict[str, str]]]) -> None:  # noqa: ANN001
    """One run's store: per compare task, the human's choice and each judge's ("first" / "second" / "tie")."""
    folder = run.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prefloop.yaml").write_text(run.config.to_yaml())  # as the runner writes it
    store = open_store(f"sqlite:///{folder / 'prefloop.db'}")
    q = Queue(store, overlap=1, lease_seconds=60)
    human = q.ensure_annotator("ada")
    for i, (says, judges) in enumerate(rows):
        t = q.add_comparison(f"p{i}", [f"a{i}", f"b{i}"])
        with store.session() as s:
            first, second = s.get(Task, t).generation_ids
        choice = {"first": first, "second": second, "tie": "tie"}
        q.record(human, t, {"choice": choice[says]})
        for name, verdict in judges.items():
            q.record(q.ensure_annotator(name, kind="judge"), t, {"choice": choice[verdict]}, confidence=0.9,
                     meta={"consistent": True, "prob_a": 0.5})
    store.dispose()


def test_judges_are_pooled_over_runs_and_compared_on_shared_tasks(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    run = {(r.arm, r.seed): r for r in exp.runs}
    # arm "rules": the rule judge agrees on 2 of 3 tasks in seed 1 (a blind tie), 1 of 2 in seed 2 (wrong side)
    _labels(run[("rules", 1)], [("first", {"fmt": "first"}), ("second", {"fmt": "second"}), ("first", {"fmt": "tie"})])
    _labels(run[("rules", 2)], [("tie", {"fmt": "tie"}), ("first", {"fmt": "second"})])
    # arm "rules-rm": the reward model labels only some human tasks (its held-out ones)
    _labels(run[("rules-rm", 1)], [("first", {"fmt": "tie", "rm": "first"}), ("second", {"fmt": "second"}),
                                   ("second", {"fmt": "first"})])
    _labels(run[("rules-rm", 2)], [("first", {"fmt": "first", "rm": "second"}), ("tie", {"fmt": "tie", "rm": "tie"}),
                                   ("first", {"fmt": "first"})])
    from prefloop.experiments.judges import pooled_judges

    rows = {(j.arm, j.judge): j for j in pooled_judges(exp)}
    assert set(rows) == {("rules", "fmt"), ("rules-rm", "fmt"), ("rules-rm", "rm")}
    fmt = rows[("rules", "fmt")]
    assert (fmt.runs, fmt.all.n, fmt.all.agree, fmt.all.blind_ties, fmt.all.wrong_side) == (2, 5, 3, 1, 1)
    assert (fmt.all.low, fmt.all.high) == pytest.approx(wilson(3, 5))
    assert (fmt.shared_n, fmt.shared_agree) == (5, 3)  # one judge: every task is shared
    rm, fmt_rm = rows[("rules-rm", "rm")], rows[("rules-rm", "fmt")]
    assert (rm.all.n, rm.all.agree, rm.shared_n, rm.shared_agree) == (3, 2, 3, 2)
    assert (fmt_rm.all.n, fmt_rm.all.agree) == (6, 4)  # over all its tasks
    assert (fmt_rm.shared_n, fmt_rm.shared_agree) == (3, 2)  # over the three the reward model labelled too
    assert fmt_rm.shared_interval == pytest.approx(wilson(2, 3))

    from prefloop.experiments import report

    report(exp, quiet=True)
    written = {(r["arm"], r["judge"]): r for r in csv.DictReader((exp.out / "judges.csv").open())}
    assert written.keys() == rows.keys()
    assert (written[("rules-rm", "fmt")]["n"], written[("rules-rm", "fmt")]["shared_n"]) == ("6", "3")
    assert "judges against the human majority" in (exp.out / "report.txt").read_text()
    # and the wandb summary run holds it as a table
    import wandb
    from wandbkit import records

    wandb.teardown()  # the offline file is whole once the service is down
    (summary,) = [p for p in (exp.out / "wandb").glob("offline-run-*/run-*.wandb") if "summary" in p.parent.name]
    logged = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
              for rec in records(summary) if rec.WhichOneof("record_type") == "history" for item in rec.history.item}
    assert logged["judges/_type"] == "table-file" and logged["judges/nrows"] == 3


def test_no_judge_table_without_judges_and_humans_on_the_same_tasks(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    run = {(r.arm, r.seed): r for r in exp.runs}
    _labels(run[("rules", 1)], [("first", {})])  # humans only
    from prefloop.experiments import report
    from prefloop.experiments.judges import pooled_judges

    assert pooled_judges(exp) == []
    report(exp, quiet=True)
    assert not (exp.out / "judges.csv").exists()
