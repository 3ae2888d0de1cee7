from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import session_scope, utcnow


@pytest.fixture
def t0():
    """A start time safely in the past, whole to the microsecond, for exact clock arithmetic."""
    return (utcnow() - timedelta(days=1)).replace(microsecond=0)


@pytest.fixture
def tick(app, settings):
    """tick(now) -> BillingRun: one billing run at `now`, committed."""
    from app.billing import service

    def _tick(now):
        with session_scope() as session:
            return service.bill_active_rentals(session, now=now, settings=settings)

    return _tick


@pytest.fixture
def invariants(app):
    def _check():
        from app.billing.audit import check_invariants

        with session_scope() as session:
            return check_invariants(session)

    return _check
