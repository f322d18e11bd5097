"""Python environments an admin registered by name (venvs or conda prefixes on the workers)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import InvalidRequest, NotFound
from service.models import PythonEnv

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def add_env(*, session: Session, name: str, path: str) -> PythonEnv:
    """Register (or move) a named environment; the path is the prefix holding bin/python."""
    if not NAME.match(name):
        raise InvalidRequest(f"environment name {name!r} must be lower-case letters, digits, '_', '.' or '-'",
                             field="name", value=name)
    if not path.startswith("/"):
        raise InvalidRequest(f"environment path {path!r} must be absolute (the prefix holding bin/python)",
                             field="path", value=path)
    env = session.get(PythonEnv, name)
    if env is None:
        env = PythonEnv(name=name, path=path)
        session.add(env)
    else:
        env.path = path
    session.commit()
    return env


def list_envs(*, session: Session) -> list[PythonEnv]:
    """Every registered environment by name."""
    return list(session.scalars(select(PythonEnv).order_by(PythonEnv.name)))


def get_env(*, session: Session, name: str) -> PythonEnv:
    """One environment; raises NotFound naming the known ones."""
    env = session.get(PythonEnv, name)
    if env is None:
        known = ", ".join(e.name for e in list_envs(session=session)) or "none registered"
        raise NotFound(f"no Python environment is called {name!r}; known: {known}", field="python_env", value=name)
    return env


def remove_env(*, session: Session, name: str) -> None:
    """Unregister an environment; raises NotFound naming the known ones. A job already submitted
    with it fails at its start, saying it is gone (worker/command_prepare.py)."""
    session.delete(get_env(session=session, name=name))
    session.commit()
