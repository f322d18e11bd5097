"""/queue: pending jobs in the order they will start, each with why it waits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from service.api.deps import CurrentUser, ReadSession, State
from service.api.routing import Route
from service.models import User, utcnow
from service.scheduling.queue_state import plan_queue, queue_labels
from service.scheduling.rooms import WaitReason
from service.schemas import QueueEntry, QueuePublic
from service.store.leases import DISPATCHER_LEASE, lease_held

router = APIRouter(prefix="/queue", tags=["queue"], route_class=Route)
# A page of the queue: 10,000 pending jobs made a 2 MB answer that took 0.3 s to build,
# while the plan behind it takes 45 ms; nobody reads past the first screens.
QUEUE_PAGE = 500
MAX_QUEUE_PAGE = 10_000


@router.get("", response_model=QueuePublic, summary="The queue in start order, with wait reasons")
def queue(
    user: CurrentUser,
    session: ReadSession,
    state: State,
    me: Annotated[bool, Query(description="only your jobs (positions stay those in the whole queue)")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_QUEUE_PAGE, description="at most this many entries")] = QUEUE_PAGE,
) -> QueuePublic:
    view = plan_queue(session, settings=state.settings)
    active = lease_held(session=session, name=DISPATCHER_LEASE)
    names = dict(session.execute(select(User.id, User.name)).all())
    placed = dict(view.plan.placements)
    ranked = [(position, job) for position, job in enumerate(view.jobs, start=1) if not me or job.owner_id == user.id]
    shown = ranked[:limit]
    labels = queue_labels(session, [job.id for _, job in shown])
    now = utcnow()
    items = []
    for position, job in shown:
        reason = view.plan.waits.get(job.id)
        if not active:
            reason = WaitReason.DISPATCHER_DOWN
        label = labels.get(job.id)
        if label is None:
            continue  # it left the queue between the two reads
        items.append(QueueEntry(position=position, job_id=job.id, owner=names.get(job.owner_id, "?"),
                                kind=label.kind, device_request=label.device_request, priority=job.priority,
                                waiting_s=(now - label.created_at).total_seconds(), reason=reason,
                                next_device=placed.get(job.id), gpus=job.gpus,
                                gang_ready=view.plan.assembling.get(job.id, (None,))[0]))
    return QueuePublic(dispatcher_active=active, total=len(view.jobs), matching=len(ranked), items=items)
