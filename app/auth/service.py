"""Users: created on the first valid token, exactly once even under concurrent first requests."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.auth.models import User
from app.auth.tokens import Claims


def get_or_create_user(session: Session, claims: Claims) -> User:
    user = session.execute(select(User).where(User.clerk_id == claims.user_id)).scalar_one_or_none()
    if user is not None:
        if claims.email and user.email != claims.email:
            _set_email(session, user, claims.email)
        return user
    # ON CONFLICT DO NOTHING makes concurrent first requests converge on one row.
    session.execute(
        insert(User)
        .values(clerk_id=claims.user_id)
        .on_conflict_do_nothing(index_elements=[User.clerk_id])
    )
    user = session.execute(select(User).where(User.clerk_id == claims.user_id)).scalar_one()
    if claims.email and user.email is None:
        _set_email(session, user, claims.email)
    return user


def _set_email(session: Session, user: User, email: str) -> None:
    taken = session.execute(select(User.id).where(User.email == email, User.id != user.id)).first()
    if taken is None:
        user.email = email
