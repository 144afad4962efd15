"""rounds.state_data: a round's control state (transitions, timings, wait bookkeeping) apart from its reported metrics

Revision ID: 0005_round_state
Revises: 0004

Until now ``rounds.metrics`` held both what a round reports (eval, datasets, training, cost,
agreement) and what the orchestrator reads back to resume (transitions, seconds per state, the
waited-for tasks, dataset paths, ...). The upgrade moves the control keys of every existing row
into the new column; the downgrade moves them back. The key lists are copied here on purpose:
a migration must keep meaning what it meant when it was written, whatever the code becomes.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_round_state"
down_revision = "0004"
branch_labels = None
depends_on = None

#: top-level keys of ``metrics`` that are control state, moved as they are.
CONTROL_KEYS = ("loop_id", "transitions", "seconds", "train_prompt_ids", "wait_tasks", "wait_started_at",
                "argilla", "data_rounds")
#: per dataset kind, ``metrics["datasets"][kind]`` keeps rows, sha256 and by_source (reported); the
#: training state reads path, sha256 and rows, which go to ``state_data["datasets"][kind]``.
DATASET_CONTROL = ("path", "sha256", "rows")

rounds = sa.table("rounds", sa.column("id", sa.Integer), sa.column("metrics", sa.JSON), sa.column("state_data", sa.JSON))


def split(metrics: dict) -> tuple[dict, dict]:
    """Old ``metrics`` → (reported metrics, control state)."""
    reported = {k: v for k, v in metrics.items() if k not in CONTROL_KEYS}
    control = {k: metrics[k] for k in CONTROL_KEYS if k in metrics}
    datasets = reported.get("datasets")
    if isinstance(datasets, dict):
        refs, summary = {}, {}
        for kind, info in datasets.items():
            if isinstance(info, dict) and "path" in info:
                refs[kind] = {k: info[k] for k in DATASET_CONTROL if k in info}
                summary[kind] = {k: v for k, v in info.items() if k != "path"}
            else:
                summary[kind] = info
        reported["datasets"] = summary
        if refs:
            control["datasets"] = refs
    return reported, control


def join(metrics: dict, control: dict) -> dict:
    """(reported metrics, control state) → old ``metrics``: the inverse of :func:`split`."""
    out = dict(metrics)
    out.update({k: control[k] for k in CONTROL_KEYS if k in control})
    refs = control.get("datasets") or {}
    if refs:
        datasets = dict(out.get("datasets") or {})
        for kind, ref in refs.items():
            datasets[kind] = {**(datasets.get(kind) or {}), **ref}
        out["datasets"] = datasets
    return out


def upgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_data", sa.JSON(), nullable=True))
    conn = op.get_bind()
    for row in conn.execute(sa.select(rounds.c.id, rounds.c.metrics)).all():
        reported, control = split(dict(row.metrics or {}))
        conn.execute(rounds.update().where(rounds.c.id == row.id).values(metrics=reported, state_data=control))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.alter_column("state_data", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(rounds.c.id, rounds.c.metrics, rounds.c.state_data)).all():
        conn.execute(rounds.update().where(rounds.c.id == row.id)
                     .values(metrics=join(dict(row.metrics or {}), dict(row.state_data or {}))))
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_column("state_data")
