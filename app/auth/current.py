"""Who is calling: the verified user of this request, and the decorators that require one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from app.auth.models import User
from app.auth.service import get_or_create_user
from app.auth.tokens import TokenVerifier
from app.errors import NotFound, Unauthorized
from app.web import db_session

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token(header: str | None = None) -> str | None:
    value = header if header is not None else request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verifier() -> TokenVerifier:
    return current_app.extensions["dc_token_verifier"]


def authenticate(token: str | None) -> User:
    if token is None:
        raise Unauthorized("Authentication required: send 'Authorization: Bearer <token>'.",
                           headers={"WWW-Authenticate": "Bearer"})
    claims = verifier().verify(token)
    session = db_session()
    user = get_or_create_user(session, claims)
    session.commit()
    return user


def current_user() -> User:
    user = g.get("dc_user")
    if user is None:
        user = authenticate(bearer_token())
        g.dc_user = user
    return user


def is_admin(user: User) -> bool:
    return user.clerk_id in current_app.config["DC_SETTINGS"].admin_user_ids


def login_required(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_user()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def admin_required(fn: F) -> F:
    """Admin-only: anyone else gets 403 (the action exists, they may not use it)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from app.errors import Forbidden

        if not is_admin(current_user()):
            raise Forbidden("This action requires an administrator.")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def admin_or_404(fn: F) -> F:
    """Admin-only pages that must not reveal they exist to anyone else."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            user = current_user()
        except Unauthorized:
            raise NotFound("Not found.") from None
        if not is_admin(user):
            raise NotFound("Not found.")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
