"""/queue: pending jobs in the order they will start, each with why it waits."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from service.api.deps import CurrentUser, ReadSession, State
from service.models import User, utcnow
from service.scheduling.queue_state import plan_queue, queue_labels
from service.scheduling.rooms import WaitReason
from service.schemas import QueueEntry, QueuePublic
from service.store.leases import DISPATCHER_LEASE, lease_held

router = APIRouter(prefix="/queue", tags=["queue"])


@router.get("", response_model=QueuePublic, summary="The queue in start order, with wait reasons")
def queue(user: CurrentUser, session: ReadSession, state: State) -> QueuePublic:
    view = plan_queue(session, settings=state.settings)
    active = lease_held(session=session, name=DISPATCHER_LEASE)
    names = dict(session.execute(select(User.id, User.name)).all())
    placed = dict(view.plan.placements)
    labels = queue_labels(session)
    now = utcnow()
    items = []
    for position, job in enumerate(view.jobs, start=1):
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
    return QueuePublic(dispatcher_active=active, items=items)
