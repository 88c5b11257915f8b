"""What `albumd status` reports, gathered from the job store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from . import db
from .config import Config
from .jobstore import JobStore
from .models import Job, JobState


def collect_status(config: Config) -> dict[str, Any]:
    engine = db.make_engine(config.db_url)
    try:
        db.upgrade(engine)
        store = JobStore(db.make_sessionmaker(engine), worker_id="status")
        with store.sessions() as s:
            running = [
                {"job_id": j.id, "path": j.path, "progress": j.progress or "", "worker": j.lease_owner}
                for j in s.execute(
                    select(Job).where(Job.state == JobState.RUNNING).order_by(Job.id)
                ).scalars()
            ]
        return {
            "counts": store.counts(),
            "running": running,
            "workers": store.workers(stale_after_s=max(60.0, 3 * config.heartbeat_s)),
            "failed": store.failures(),
            "database": engine.url.render_as_string(hide_password=True),
        }
    finally:
        engine.dispose()
