"""Users and their tokens."""

from __future__ import annotations

import re

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import changed
from service.errors import Conflict, InvalidRequest, NotFound
from service.models import Token, User, utcnow
from service.security import hash_token, new_token

NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def member_account_name(member: str) -> str:
    """What an unmapped member's own command account is called (it has no passwd entry)."""
    return f"gpulab-{member}"


def run_as(*, unix_user: str | None, shared_account: str, member: str) -> str:
    """The account a member's command runs as on a root worker: mapped, shared, or its own."""
    return unix_user or shared_account or member_account_name(member)


def check_unix_user(unix_user: str | None) -> str | None:
    """A Unix account name a member may be mapped to (never root); None clears the mapping."""
    if unix_user in (None, ""):
        return None
    if not UNIX_NAME.match(unix_user):
        raise InvalidRequest(f"unix_user {unix_user!r} is not a Unix account name", field="unix_user",
                             value=unix_user)
    if unix_user == "root":
        raise InvalidRequest("unix_user 'root': members' commands never run as root; map an ordinary account",
                             field="unix_user", value=unix_user)
    return unix_user


def create_user(*, session: Session, name: str, is_admin: bool = False,
                unix_user: str | None = None) -> tuple[User, str]:
    """Add a member (or admin) and return them with their first token, shown only now."""
    unix_user = check_unix_user(unix_user)
    if not NAME.match(name):
        raise InvalidRequest(
            f"user name {name!r} must be lower-case letters, digits, '_', '.' or '-'",
            field="name",
            value=name,
        )
    user = User(name=name, is_admin=is_admin, unix_user=unix_user)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"user {name!r} exists already", field="name", value=name) from None
    token = _add_token(session, user)
    session.commit()
    return user, token


def set_unix_user(*, session: Session, name: str, unix_user: str | None) -> User:
    """Map a member to a Unix account (None: the default unprivileged one) for their command jobs."""
    unix_user = check_unix_user(unix_user)
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user is called {name!r}", field="name", value=name)
    user.unix_user = unix_user
    session.commit()
    return user


def issue_token(*, session: Session, name: str) -> str:
    """A new token for an existing user, shown only now."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user is called {name!r}", field="name", value=name)
    token = _add_token(session, user)
    session.commit()
    return token


def _add_token(session: Session, user: User) -> str:
    token = new_token()
    session.add(Token(user_id=user.id, token_hash=hash_token(token), prefix=token[:9]))
    return token


def authenticate(*, session: Session, token: str) -> User | None:
    """The user a token belongs to, or None for an unknown or revoked token."""
    return authenticate_hash(session=session, token_hash=hash_token(token))


def authenticate_hash(*, session: Session, token_hash: str) -> User | None:
    """The user of a token known only by its stored hash, or None when unknown or revoked."""
    return session.scalar(
        select(User)
        .join(Token, Token.user_id == User.id)
        .where(Token.token_hash == token_hash, Token.revoked_at.is_(None))
    )


def count_users(*, session: Session) -> int:
    """How many users exist (gpulab up makes the first admin when there are none)."""
    return session.scalar(select(func.count(User.id))) or 0


def list_users(*, session: Session) -> list[User]:
    """All users by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def users_without_token(*, session: Session) -> set[str]:
    """The names of users none of whose tokens works (never issued, or every one revoked)."""
    live = select(Token.user_id).where(Token.revoked_at.is_(None))
    return set(session.scalars(select(User.name).where(User.id.not_in(live))))


def revoke_tokens(*, session: Session, name: str) -> int:
    """Revoke every token of a user; returns how many. Raises NotFound for an unknown name."""
    user_id = session.scalar(select(User.id).where(User.name == name))
    if user_id is None:  # a typo would otherwise "revoke 0 tokens" and leave the real member in
        raise NotFound(f"no user is called {name!r}", field="name", value=name)
    result = session.execute(
        update(Token).where(Token.user_id == user_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    session.commit()
    return changed(result)
