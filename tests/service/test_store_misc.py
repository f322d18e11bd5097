"""Users and tokens, leases, and worker heartbeats in the store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.db import Database
from service.errors import Conflict, InvalidRequest
from service.models import Device, Token, Worker, utcnow
from service.security import hash_token
from service.store.devices import declare_worker_lost, find_silent_workers, heartbeat, register_worker
from service.store.leases import acquire_lease, lease_held, release_lease
from service.store.users import authenticate, create_user, revoke_tokens

DEVICE = {"id": "h/cpu", "host": "h", "kind": "cpu", "index": None, "name": "CPU", "uuid": None,
          "memory_total_mb": 1}


def test_tokens_are_stored_hashed_and_can_be_revoked(db: Database) -> None:
    with db.writing() as s:
        user, token = create_user(session=s, name="carol")
    with db.reading() as s:
        stored = s.scalars(select(Token.token_hash)).all()
        assert stored == [hash_token(token)] and token not in stored
        assert authenticate(session=s, token=token).name == "carol"
        assert authenticate(session=s, token=token + "x") is None
    with db.writing() as s:
        assert revoke_tokens(session=s, name="carol") == 1
    with db.reading() as s:
        assert authenticate(session=s, token=token) is None


def test_user_names_are_checked_and_unique(db: Database) -> None:
    with db.writing() as s:
        create_user(session=s, name="dave")
    with db.writing() as s, pytest.raises(Conflict):
        create_user(session=s, name="dave")
    with db.writing() as s, pytest.raises(InvalidRequest) as err:
        create_user(session=s, name="Bad Name")
    assert err.value.field == "name"


def test_one_lease_holder_at_a_time(db: Database) -> None:
    with db.writing() as s:
        assert acquire_lease(session=s, name="dispatcher", holder="a", seconds=30)
    with db.writing() as s:
        assert not acquire_lease(session=s, name="dispatcher", holder="b", seconds=30)
    with db.writing() as s:
        assert acquire_lease(session=s, name="dispatcher", holder="a", seconds=30)  # renewal
    with db.writing() as s:
        release_lease(session=s, name="dispatcher", holder="a")
    with db.writing() as s:
        assert acquire_lease(session=s, name="dispatcher", holder="b", seconds=30)


def test_a_lease_is_held_until_it_expires(db: Database) -> None:
    """What /queue reads to say whether a dispatcher is active (else every job waits on `dispatcher_down`)."""
    with db.reading() as s:
        assert not lease_held(session=s, name="dispatcher")  # never taken
    with db.writing() as s:
        acquire_lease(session=s, name="dispatcher", holder="a", seconds=30)
    with db.reading() as s:
        assert lease_held(session=s, name="dispatcher") and not lease_held(session=s, name="other")
    with db.writing() as s:
        release_lease(session=s, name="dispatcher", holder="a")  # expires now
    with db.reading() as s:
        assert not lease_held(session=s, name="dispatcher")


def test_silent_worker_is_declared_lost_once(db: Database) -> None:
    with db.writing() as s:
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    with db.writing() as s:
        assert heartbeat(session=s, worker_id="w1", running_job_ids=[])
    with db.writing() as s:
        assert find_silent_workers(session=s, timeout_s=30) == []
        s.execute(update(Worker).values(last_heartbeat_at=utcnow() - timedelta(seconds=60)))
        s.commit()
    with db.writing() as s:
        assert [w.id for w in find_silent_workers(session=s, timeout_s=30)] == ["w1"]
    with db.writing() as s:
        declare_worker_lost(session=s, worker_id="w1")
    with db.reading() as s:
        assert s.get(Device, "h/cpu").state == "offline"
    with db.writing() as s:
        assert declare_worker_lost(session=s, worker_id="w1") == []
        # A lost worker that beats again is told so, and must stop taking jobs.
        assert not heartbeat(session=s, worker_id="w1", running_job_ids=[])


def test_drain_survives_a_worker_restart(db: Database) -> None:
    from service.store.devices import set_draining

    with db.writing() as s:
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    with db.writing() as s:
        set_draining(session=s, device_id="h/cpu", draining=True)
    with db.writing() as s:
        register_worker(session=s, worker_id="w2", device=DEVICE, pid=2, slots=1)
    with db.reading() as s:
        assert s.get(Device, "h/cpu").state == "draining"
    with db.writing() as s:
        assert set_draining(session=s, device_id="h/cpu", draining=False).state == "online"



def test_draining_an_unknown_device_names_the_ids(db: Database) -> None:
    """`gpulab devices drain cpu` (the form a submit takes) said only "no device has id 'cpu'"."""
    from service.errors import NotFound
    from service.store.devices import set_draining

    with db.writing() as s:
        register_worker(session=s, worker_id="w1", device=DEVICE, pid=1, slots=1)
    with db.writing() as s, pytest.raises(NotFound) as found:
        set_draining(session=s, device_id="cpu", draining=True)
    assert found.value.detail == "no device has id 'cpu'; did you mean 'h/cpu'? (devices: h/cpu)"
    assert found.value.field == "device_id"
