"""Device samples: recorded by each worker, kept bounded by downsampling and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from service.db import changed
from service.models import Device, DeviceSample, utcnow

FIELDS = ("utilization_pct", "memory_used_mb", "memory_total_mb", "temperature_c", "power_w", "external_mb")


def record_sample(*, session: Session, device_id: str, sample: dict[str, Any], t: datetime | None = None) -> None:
    """Store one raw reading of a device."""
    session.execute(insert(DeviceSample).values(
        device_id=device_id, t=t or utcnow(), resolution="raw", processes=sample.get("processes"),
        **{f: sample.get(f) for f in FIELDS}))
    session.commit()


def latest_samples(*, session: Session) -> dict[str, DeviceSample]:
    """The newest raw reading of every device that has one.

    One probe of the (device_id, resolution, t) index per device, newest first: a
    `GROUP BY device_id` with max(t) reads every raw reading's index entry instead (a day of
    5 s readings is 17,280 a device; /devices, /metrics and every dispatcher pass ask).
    """
    newest = (select(DeviceSample.id).where(DeviceSample.device_id == Device.id, DeviceSample.resolution == "raw")
              .order_by(DeviceSample.t.desc()).limit(1).correlate(Device).scalar_subquery())
    rows = session.scalars(select(DeviceSample).join(Device, DeviceSample.id == newest))
    return {r.device_id: r for r in rows}


def list_samples(*, session: Session, device_id: str, since: datetime, step_s: float) -> list[dict[str, Any]]:
    """A device's readings since `since`, averaged into buckets of `step_s` seconds."""
    rows = session.execute(
        select(DeviceSample.t.label("at"), *[getattr(DeviceSample, f) for f in FIELDS])
        .where(DeviceSample.device_id == device_id, DeviceSample.t >= since)
        .order_by(DeviceSample.t)
    ).all()
    return bucket_average(rows, since=since, step_s=step_s)


def bucket_average(rows: Sequence[Any], *, since: datetime, step_s: float) -> list[dict[str, Any]]:
    """Average rows (at, *FIELDS) into consecutive buckets; empty buckets are left out.

    (The time is labelled `at`: a Row's `t` attribute is its tuple.)
    """
    buckets: dict[int, list[Any]] = {}
    for row in rows:
        buckets.setdefault(int((row.at - since).total_seconds() // step_s), []).append(row)
    out = []
    for index in sorted(buckets):
        group = buckets[index]
        item: dict[str, Any] = {"t": (since + timedelta(seconds=index * step_s)).isoformat()}
        for f in FIELDS:
            values = [getattr(r, f) for r in group if getattr(r, f) is not None]
            item[f] = round(sum(values) / len(values), 2) if values else None
        out.append(item)
    return out


def downsample_and_prune(*, session: Session, device_id: str, raw_keep_s: float, minute_keep_s: float,
                         now: datetime | None = None) -> tuple[int, int]:
    """Fold raw readings older than `raw_keep_s` into minute averages; drop minutes older than
    `minute_keep_s`. Returns (raw rows folded, minute rows dropped)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=raw_keep_s)
    old = session.execute(
        select(DeviceSample.t.label("at"), *[getattr(DeviceSample, f) for f in FIELDS])
        .where(DeviceSample.device_id == device_id, DeviceSample.resolution == "raw", DeviceSample.t < cutoff)
        .order_by(DeviceSample.t)
    ).all()
    if old:
        start: datetime = old[0][0].replace(second=0, microsecond=0)
        minutes = bucket_average(old, since=start, step_s=60)
        session.execute(insert(DeviceSample), [
            {"device_id": device_id, "resolution": "minute", "t": datetime.fromisoformat(m.pop("t")), **m}
            for m in minutes])
        session.execute(delete(DeviceSample).where(
            DeviceSample.device_id == device_id, DeviceSample.resolution == "raw", DeviceSample.t < cutoff))
    dropped = changed(session.execute(delete(DeviceSample).where(
        DeviceSample.device_id == device_id, DeviceSample.resolution == "minute",
        DeviceSample.t < now - timedelta(seconds=minute_keep_s))))
    session.commit()
    return len(old), dropped
