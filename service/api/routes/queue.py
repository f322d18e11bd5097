"""/queue: pending jobs in the order they will start, each with why it waits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from service.api.deps import CurrentUser, ReadSession, State
from service.api.routing import Route
from service.models import User, utcnow
from service.scheduling.queue_page import queue_page
from service.scheduling.rooms import WaitReason
from service.schemas import QueuePublic
from service.store.leases import DISPATCHER_LEASE, lease_held

router = APIRouter(prefix="/queue", tags=["queue"], route_class=Route)
# A page of the queue: 10,000 pending jobs made a 2 MB answer that took 0.3 s to build;
# nobody reads past the first screens, and the plan walks only as far as the page goes.
QUEUE_PAGE = 500
MAX_QUEUE_PAGE = 10_000
_NAMES = select(User.id, User.name)  # built once, as queue_page's statements are


@router.get("", response_model=QueuePublic, summary="The queue in start order, with wait reasons")
def queue(
    user: CurrentUser,
    session: ReadSession,
    state: State,
    me: Annotated[bool, Query(description="only your jobs (positions stay those in the whole queue)")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_QUEUE_PAGE, description="at most this many entries")] = QUEUE_PAGE,
) -> QueuePublic:
    page = queue_page(session, settings=state.settings, owner_id=user.id if me else None, limit=limit)
    active = lease_held(session=session, name=DISPATCHER_LEASE)
    names = dict(session.execute(_NAMES).all())
    placed, assembling = dict(page.plan.placements), page.plan.assembling
    waits, down = page.plan.waits, None if active else WaitReason.DISPATCHER_DOWN
    now = utcnow()
    # Plain dicts validated once as the whole answer: 500 QueueEntry(...) calls cost twice that
    # validation, and each Row attribute read by name ~3× an unpacking (see docs/design.md,
    # "/queue builds its answer as data").
    items = []
    for position, (job_id, owner_id, kind, device_request, priority, gpus, created_at) in page.shown():
        items.append({"position": position, "job_id": job_id, "owner": names.get(owner_id, "?"), "kind": kind,
                      "device_request": device_request, "priority": priority,
                      "waiting_s": (now - created_at).total_seconds(), "reason": down or waits.get(job_id),
                      "next_device": placed.get(job_id), "gpus": gpus,
                      "gang_ready": assembling[job_id][0] if job_id in assembling else None})
    return QueuePublic.model_validate({"dispatcher_active": active, "total": page.total, "matching": page.matching,
                                       "items": items})
