"""The SQL side of batched run writes (``bulk.py``): a batch of queued runs in one transaction.

Used by ``BulkRuns``' writer thread in the driver and by its child process
(``bulk_process.py``). The rows are the ones ``create_run``/``log_batch``/``update_run_info``
write, through MLflow's own models and session maker; a batch that fails is written run by
run, each part through the public API where one exists.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from mlorch.tracking.limits import METRICS_PER_REQUEST, PARAMS_TAGS_PER_REQUEST, chunks, retry_busy
from mlorch.tracking.mlflow_private import sql_models, validate_batch

__all__ = ["PendingRun", "SqlBatches"]

log = logging.getLogger("mlorch.tracking")

SQL_OR_CLAUSES = 100  # terms per OR in one DELETE (keeps the statement small; not an MLflow limit)
_MAX_INF = 1.7976931348623157e308  # how MLflow stores +-inf (SQL has no infinity)


@dataclass
class PendingRun:
    """Everything queued for one run since the last commit."""

    run_id: str
    row: dict[str, Any] | None = None  # the ``runs`` row of a run not written yet
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, timestamp, step
    status: str | None = None
    end_time: int | None = None


class SqlBatches:
    """The SQL side: a batch of queued runs in one transaction, and the fallbacks when that fails."""

    def __init__(self, client: Any, sql_store: Any):
        self.client = client
        self.sql = sql_store

    def write(self, batch: list[PendingRun]) -> None:
        """Commit ``batch``; a failed batch is written run by run. Raises only on BaseException."""
        batch = [p for p in batch if _valid(p) or self._write_alone(p)]
        try:
            retry_busy(lambda: self._commit(batch), "bulk run write")
        except Exception as exc:
            log.warning(
                "tracking: a batch of %d run(s) failed (%s: %s); writing them one by one", len(batch), type(exc).__name__, exc
            )
            for pending in batch:
                self._write_alone(pending)

    def _commit(self, batch: list[PendingRun]) -> None:
        from sqlalchemy import and_, bindparam, delete, insert, or_, select, update

        if not batch:
            return
        models = sql_models()
        SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric = (  # noqa: N806 - MLflow's class names
            models.SqlRun,
            models.SqlTag,
            models.SqlParam,
            models.SqlMetric,
            models.SqlLatestMetric,
        )
        with self.sql.ManagedSessionMaker(read_only=False) as session:
            rows = []
            for p in batch:
                if p.row is not None:
                    rows.append({**p.row, "status": p.status or "RUNNING", "end_time": p.end_time})
            if rows:
                session.execute(insert(SqlRun), rows)
            existing = [p.run_id for p in batch if p.row is None]
            retagged = [
                and_(SqlTag.run_uuid == p.run_id, SqlTag.key.in_(list(p.tags))) for p in batch if p.row is None and p.tags
            ]
            for clauses in chunks(retagged, SQL_OR_CLAUSES):  # tags are upserts: drop the old value of a key set again
                session.execute(delete(SqlTag).where(or_(*clauses)))
            tags = [{"key": k, "value": v, "run_uuid": p.run_id} for p in batch for k, v in p.tags.items()]
            if tags:
                session.execute(insert(SqlTag), tags)
            known: dict[tuple[str, str], str] = {}
            if existing and any(p.params for p in batch if p.row is None):
                known = {
                    (r, k): v
                    for r, k, v in session.execute(
                        select(SqlParam.run_uuid, SqlParam.key, SqlParam.value).where(SqlParam.run_uuid.in_(existing))
                    )
                }
            params = []
            for p in batch:
                for k, v in p.params.items():
                    if (p.run_id, k) not in known:
                        params.append({"key": k, "value": v, "run_uuid": p.run_id})
                    elif known[p.run_id, k] != v:  # MLflow params are write-once: the first value stays
                        log.warning("tracking: run %s: param %r is already %r; %r not logged", p.run_id, k, known[p.run_id, k], v)
            if params:
                session.execute(insert(SqlParam), params)
            points = {(p.run_id, k, ts, step, *_sanitize(v)) for p in batch for k, v, ts, step in p.metrics}
            if points:
                session.execute(
                    insert(SqlMetric),
                    [
                        {"run_uuid": r, "key": k, "timestamp": ts, "step": step, "is_nan": nan, "value": v}
                        for r, k, ts, step, nan, v in points
                    ],
                )
                self._latest(session, points, existing, SqlLatestMetric, select, insert, update)
            ended = [
                {"run_uuid": p.run_id, "status": p.status, "end_time": p.end_time} for p in batch if p.row is None and p.status
            ]
            if ended:  # Core executemany: no ORM row-count check, so a missing run does not fail the others' ends
                runs = SqlRun.__table__
                session.execute(
                    update(runs)
                    .where(runs.c.run_uuid == bindparam("rid"))
                    .values(status=bindparam("st"), end_time=bindparam("et")),
                    [{"rid": e["run_uuid"], "st": e["status"], "et": e["end_time"]} for e in ended],
                )

    @staticmethod
    def _latest(
        session: Any, points: set[tuple[Any, ...]], existing: list[str], model: Any, select: Any, insert: Any, update: Any
    ) -> None:
        """``latest_metrics``: per run and key the point with the highest (step, timestamp, value), as MLflow keeps it."""
        best: dict[tuple[str, str], tuple[int, int, float, bool]] = {}
        for run_id, key, ts, step, nan, value in points:
            candidate = (step, ts, value, nan)
            if (run_id, key) not in best or candidate[:3] > best[run_id, key][:3]:
                best[run_id, key] = candidate
        old: dict[tuple[str, str], tuple[int, int, float]] = {}
        runs = sorted({r for r, _ in best} & set(existing))
        if runs:
            rows = session.execute(
                select(model.run_uuid, model.key, model.step, model.timestamp, model.value)
                .where(model.run_uuid.in_(runs))
                .order_by(model.run_uuid, model.key)
                .with_for_update()
            ).all()  # as MLflow: no other writer moves them meanwhile
            old = {(r, k): (s, t, v) for r, k, s, t, v in rows}
        new = []
        for (run_id, key), (step, ts, value, nan) in best.items():
            row = {"run_uuid": run_id, "key": key, "step": step, "timestamp": ts, "value": value, "is_nan": nan}
            if (run_id, key) not in old:
                new.append(row)
            elif (step, ts, value) > old[run_id, key]:
                session.execute(
                    update(model)
                    .where(model.run_uuid == run_id, model.key == key)
                    .values(step=step, timestamp=ts, value=value, is_nan=nan)
                )
        if new:
            session.execute(insert(model), new)

    def _write_alone(self, pending: PendingRun) -> bool:
        """One run outside a batch: its row in SQL, the rest through the public API, each part on its own.

        Returns False (it is used as a filter). Whatever MLflow refuses is logged with
        MLflow's reason; the run still gets its row and its status.
        """
        from mlflow.entities import Metric, Param, RunTag

        def attempt(what: str, write: Any) -> None:
            try:
                retry_busy(write, what)
            except Exception:
                log.exception("tracking: run %s: %s failed", pending.run_id, what)

        if pending.row is not None:
            attempt("creating the run", lambda: self._insert_row(pending.row))
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in pending.metrics]
        for chunk in chunks(metrics, METRICS_PER_REQUEST):
            attempt("logging metrics", lambda: self.client.log_batch(pending.run_id, metrics=list(chunk)))
        params = [Param(k, v) for k, v in pending.params.items()]
        for param_chunk in chunks(params, PARAMS_TAGS_PER_REQUEST):
            attempt("logging params", lambda: self.client.log_batch(pending.run_id, params=list(param_chunk)))
        tags = [RunTag(k, v) for k, v in pending.tags.items()]
        for tag_chunk in chunks(tags, PARAMS_TAGS_PER_REQUEST):
            attempt("setting tags", lambda: self.client.log_batch(pending.run_id, tags=list(tag_chunk)))
        if pending.status:
            attempt("ending the run", lambda: self.client.set_terminated(pending.run_id, pending.status, pending.end_time))
        return False

    def _insert_row(self, row: dict[str, Any]) -> None:
        from sqlalchemy import insert

        with self.sql.ManagedSessionMaker(read_only=False) as session:
            session.execute(insert(sql_models().SqlRun), [row])


def _sanitize(value: float) -> tuple[bool, float]:
    """(is_nan, value) as MLflow stores a metric: NaN as 0 with a flag, infinities as the largest float."""
    value = float(value)
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, _MAX_INF if value > 0 else -_MAX_INF
    return False, value


def _valid(pending: PendingRun) -> bool:
    """MLflow's own checks on names and sizes (and its truncation of long values, applied here).

    A run that fails them is written alone, through the public API, where MLflow says why.
    """
    from mlflow.entities import Metric, Param, RunTag

    try:
        _, params, tags = validate_batch(
            [Metric(k, v, ts, step) for k, v, ts, step in pending.metrics],
            [Param(k, v) for k, v in pending.params.items()],
            [RunTag(k, v) for k, v in pending.tags.items()],
        )
    except Exception:
        return False
    pending.params = {p.key: p.value for p in params}
    pending.tags = {t.key: t.value for t in tags}
    return True
