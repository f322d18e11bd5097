"""/bundles: upload a packed working directory (streamed to disk, content-addressed), look one up."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from service import bundles as bundle_files
from service.api.deps import BriefUser, CurrentUser, ReadSession, State, in_db_thread
from service.api.problems import problem_responses
from service.api.routing import Route
from service.models import Bundle
from service.schemas import BundlePublic
from service.store import bundles as bundle_store

router = APIRouter(prefix="/bundles", tags=["bundles"], route_class=Route)
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the bundle's sha256, hex")]


def bundle_public(bundle: Bundle, keep_s: float) -> BundlePublic:
    """A bundle as the API shows it."""
    return BundlePublic(sha256=bundle.sha256, size_bytes=bundle.size_bytes, files=bundle.files,
                        unpacked_bytes=bundle.unpacked_bytes, created_at=bundle.created_at,
                        last_used_at=bundle.last_used_at,
                        expires_at=bundle.last_used_at + timedelta(seconds=keep_s))


@router.post("", status_code=201, response_model=BundlePublic,
             responses={**problem_responses(413, 422),
                        200: {"model": BundlePublic, "description": "this content was uploaded before"}},
             summary="Upload a bundle (a tar archive, gzip allowed, as the raw body)",
             description="Streamed to disk under its sha256; the same content again answers 200. "
             "Over GPULAB_MAX_BUNDLE_MB: 413. Entries that are absolute, contain `..`, are devices or "
             "links pointing outside: 422.")
async def upload_bundle(request: Request, response: Response, user: BriefUser, state: State) -> BundlePublic:
    settings = state.settings
    limit = settings.max_bundle_mb * 2**20
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        # Refused before a byte is read: the client learns the limit at once.
        raise bundle_files.BundleTooLarge(
            f"the bundle ({int(declared) // 2**20} MiB) is larger than GPULAB_MAX_BUNDLE_MB="
            f"{settings.max_bundle_mb}; leave data out (.gpulabignore) or ask an admin to raise it",
            field="body", value=int(declared), extra={"limit_mb": settings.max_bundle_mb})
    await in_db_thread(state, _expire, state)
    info = await bundle_files.receive(request.stream(), root=settings.bundles_root, limit_bytes=limit)

    def record() -> tuple[BundlePublic, bool]:
        with state.db.writing() as session:
            bundle, created = bundle_store.record_bundle(
                session=session, sha256=info.sha256, owner_id=user.id, size_bytes=info.size_bytes,
                files=info.files, unpacked_bytes=info.unpacked_bytes)
            return bundle_public(bundle, settings.bundle_keep_s), created

    try:
        public, created = await in_db_thread(state, record)
        bundle_files.place(settings.bundles_root, info)  # after the commit: see bundle_files.retire
    finally:
        bundle_files.discard(info.staged)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/bundles/{info.sha256}"
    return public


def _expire(state: State) -> None:
    """Remove bundles nobody used for GPULAB_BUNDLE_KEEP_S (checked at each upload)."""
    with state.db.writing() as session:
        shas = bundle_store.expire_bundles(session=session, keep_s=state.settings.bundle_keep_s)

    for sha in shas:
        bundle_files.retire(state.settings.bundles_root, sha, wanted=functools.partial(_held, state, sha))


def _held(state: State, sha: str) -> bool:
    """Whether any member's row holds this content now (read afresh)."""
    with state.db.reading() as session:
        return bundle_store.count_bundles(session=session, sha256=sha) > 0


@router.get("/{sha256}", response_model=BundlePublic, summary="A bundle you uploaded (404: upload it)")
def get_bundle(sha256: Sha256, user: CurrentUser, session: ReadSession, state: State) -> BundlePublic:
    bundle = bundle_store.get_bundle(session=session, sha256=sha256, user=user)
    return bundle_public(bundle, state.settings.bundle_keep_s)
