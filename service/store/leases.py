"""Named leases: one holder at a time (the active dispatcher), renewed before expiry."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import changed
from service.models import Lease, utcnow

# The active dispatcher's lease: the dispatcher takes it, `/queue` reads whether anyone holds it.
DISPATCHER_LEASE = "dispatcher"


def acquire_lease(*, session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take or renew `name` for `holder` if free, expired or already ours. Commits."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    won = changed(session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, expires_at=expires)
    )) == 1
    if not won:
        session.add(Lease(name=name, holder=holder, expires_at=expires))
        try:
            session.flush()
            won = True
        except IntegrityError:
            session.rollback()
            return False
    session.commit()
    return won


def release_lease(*, session: Session, name: str, holder: str) -> None:
    """Give a lease up at shutdown so a standby takes over at once."""
    session.execute(
        update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=utcnow())
    )
    session.commit()


def lease_held(*, session: Session, name: str) -> bool:
    """Whether someone holds `name` now (taken and not expired)."""
    lease = session.get(Lease, name)
    return lease is not None and lease.expires_at > utcnow()
