"""Bundle rows: who uploaded which content, and when a job last used it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import InvalidParams, NotFound
from service.models import Bundle, Job, JobStatus, User, utcnow
from service.store.users import run_as

ACTIVE = (JobStatus.pending, JobStatus.dispatched, JobStatus.running)


def record_bundle(*, session: Session, sha256: str, owner_id: int, size_bytes: int, files: int,
                  unpacked_bytes: int) -> tuple[Bundle, bool]:
    """The owner's row for this content, made if new; returns it and whether it is new."""
    existing = session.scalar(select(Bundle).where(Bundle.sha256 == sha256, Bundle.owner_id == owner_id))
    if existing is not None:
        existing.last_used_at = utcnow()
        session.commit()
        return existing, False
    bundle = Bundle(sha256=sha256, owner_id=owner_id, size_bytes=size_bytes, files=files,
                    unpacked_bytes=unpacked_bytes)
    session.add(bundle)
    try:
        session.commit()
    except IntegrityError:  # the same member uploaded the same content twice at once
        session.rollback()
        return record_bundle(session=session, sha256=sha256, owner_id=owner_id, size_bytes=size_bytes,
                             files=files, unpacked_bytes=unpacked_bytes)
    return bundle, True


def get_bundle(*, session: Session, sha256: str, user: User) -> Bundle:
    """A bundle the user uploaded (admins: anyone's); raises NotFound."""
    stmt = select(Bundle).where(Bundle.sha256 == sha256)
    if not user.is_admin:
        stmt = stmt.where(Bundle.owner_id == user.id)
    bundle = session.scalars(stmt.limit(1)).first()
    if bundle is None:
        raise NotFound(f"you have no bundle {sha256}; upload it with POST /bundles", field="sha256", value=sha256)
    return bundle


def use_bundle(*, session: Session, sha256: str, user: User) -> Bundle:
    """Check a submitted job may use this bundle and mark it used (in the submit's transaction)."""
    try:
        bundle = get_bundle(session=session, sha256=sha256, user=user)
    except NotFound:
        raise InvalidParams(f"params.bundle: you have no bundle {sha256} (it expired or was never uploaded); "
                            "upload it again", field="params.bundle", value=sha256) from None
    bundle.last_used_at = utcnow()
    return bundle


def bundle_of_job(*, session: Session, sha256: str, owner_id: int) -> Bundle | None:
    """The row of the bundle a job names (for the worker and for showing the job)."""
    return session.scalars(select(Bundle).where(Bundle.sha256 == sha256, Bundle.owner_id == owner_id)).first()


def expire_bundles(*, session: Session, keep_s: float) -> list[str]:
    """Drop rows unused for `keep_s` (none a waiting or running job needs); the shas no row holds
    any more, whose files may go (through `service.bundles.retire`)."""
    cutoff = utcnow() - timedelta(seconds=keep_s)
    needed = select(Job.id).where(
        Job.kind == "command", Job.status.in_(ACTIVE), Job.owner_id == Bundle.owner_id,
        Job.params["bundle"].as_string() == Bundle.sha256)
    # The age is checked again by the DELETE itself: a submit that marked the bundle used holds
    # its row, and PostgreSQL re-reads the row once that submit commits (SQLite's writes take turns).
    shas = set(session.scalars(
        delete(Bundle).where(Bundle.last_used_at < cutoff, ~needed.exists()).returning(Bundle.sha256)))
    if not shas:
        session.rollback()
        return []
    still = set(session.scalars(select(Bundle.sha256).where(Bundle.sha256.in_(shas))))
    session.commit()
    return sorted(shas - still)


def count_bundles(*, session: Session, sha256: str) -> int:
    """How many members hold this content."""
    return session.scalar(select(func.count(Bundle.id)).where(Bundle.sha256 == sha256)) or 0


def command_facts(*, session: Session, job: Job, params: dict[str, Any],
                  shared_account: str) -> dict[str, object] | None:
    """What a command job runs, on which bundle, and as which account (for showing the job);
    `params` are the job's as its viewer sees them (another member's --env values hidden)."""
    if job.kind != "command":
        return None
    bundle = None
    if params.get("bundle"):
        row = bundle_of_job(session=session, sha256=params["bundle"], owner_id=job.owner_id)
        bundle = {"sha256": params["bundle"], "size_bytes": row.size_bytes if row else None,
                  "files": row.files if row else None}
    ran_as = (job.result or {}).get("unix_user")
    if not ran_as:  # not run yet (or it failed before reporting): the account it maps to now
        owner = session.get(User, job.owner_id)
        ran_as = run_as(unix_user=owner.unix_user if owner else None, shared_account=shared_account,
                        member=owner.name if owner else "?")
    return {"argv": params.get("argv", []), "env": params.get("env", {}),
            "python_env": params.get("python_env") or "default", "requeue": bool(params.get("requeue")),
            "bundle": bundle, "unix_user": ran_as}
