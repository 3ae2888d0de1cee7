from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app import idempotency
from app.auth.current import BEARER_AUTH, admin_required, current_user, is_admin, login_required
from app.billing import accrued, audit, earnings, payouts, service
from app.billing.schemas import (
    BalanceSchema,
    CreditCreateSchema,
    EarningListSchema,
    EarningsQueryArgsSchema,
    InvariantReportSchema,
    PayoutCreateSchema,
    PayoutListSchema,
    PayoutQueryArgsSchema,
    PayoutRejectSchema,
    PayoutSchema,
    TransactionListSchema,
    TransactionSchema,
)
from app.pagination import PageArgsSchema
from app.web import db_session

blp = Blueprint("billing", __name__, url_prefix="/api/v1", description="Billing")


@blp.route("/billing/balance")
class Balance(MethodView):
    decorators = [login_required]

    @blp.response(200, BalanceSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self):
        """Show my balance."""
        # Posted, less what my running rentals have cost since their last posting.
        return {"balance": accrued.balance_of(db_session(), current_user().id)}


@blp.route("/billing/transactions")
class Transactions(MethodView):
    decorators = [login_required]

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, TransactionListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my ledger lines, newest first."""
        items, next_cursor = service.list_transactions(db_session(), user=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/billing/credits")
class Credits(MethodView):
    decorators = [admin_required]

    @blp.arguments(CreditCreateSchema)
    @blp.response(201, TransactionSchema)
    @blp.alt_response(
        200,
        schema=TransactionSchema,
        description="This reference was credited before: the same ledger line",
    )
    @blp.doc(security=BEARER_AUTH, parameters=[idempotency.OPENAPI_HEADER])
    @idempotency.idempotent("POST /billing/credits", TransactionSchema, 201)
    def post(self, data):
        """Top up a user's balance (admins); credited once per reference."""
        line, created = service.top_up(db_session(), **data)
        return line, 201 if created else 200


@blp.route("/billing/invariants")
class Invariants(MethodView):
    decorators = [admin_required]

    @blp.response(200, InvariantReportSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self):
        """Check the ledger's invariants and list every difference (admins)."""
        return audit.check_invariants(db_session())


@blp.route("/billing/earnings")
class Earnings(MethodView):
    decorators = [login_required]

    @blp.arguments(EarningsQueryArgsSchema, location="query")
    @blp.response(200, EarningListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my earnings by period and node, newest period first."""
        items, next_cursor = earnings.earnings(db_session(), host_id=current_user().id, **args)
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/billing/payouts")
class Payouts(MethodView):
    decorators = [login_required]

    @blp.arguments(PayoutQueryArgsSchema, location="query")
    @blp.response(200, PayoutListSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, args):
        """List my payouts, newest first."""
        items, next_cursor = payouts.list_payouts(db_session(), user=current_user(), **args)
        return {"items": items, "next_cursor": next_cursor}

    @blp.arguments(PayoutCreateSchema)
    @blp.response(201, PayoutSchema)
    @blp.alt_response(409, description="More than the balance available for a payout now")
    @blp.doc(security=BEARER_AUTH, parameters=[idempotency.OPENAPI_HEADER])
    @idempotency.idempotent("POST /billing/payouts", PayoutSchema, 201)
    def post(self, data):
        """Request a payout from my available balance (earnings still held are not available)."""
        return payouts.request_payout(
            db_session(),
            user_id=current_user().id,
            amount=data["amount"],
            settings=current_app.config["DC_SETTINGS"],
        )


@blp.route("/billing/payouts/<uuid:payout_id>")
class PayoutById(MethodView):
    decorators = [login_required]

    @blp.response(200, PayoutSchema)
    @blp.doc(security=BEARER_AUTH)
    def get(self, payout_id):
        """Show one of my payouts."""
        user = current_user()
        return payouts.get_payout(
            db_session(), payout_id=payout_id, user=user, is_admin=is_admin(user)
        )


@blp.route("/billing/payouts/<uuid:payout_id>/approve")
class PayoutApproval(MethodView):
    decorators = [admin_required]

    @blp.response(200, PayoutSchema)
    @blp.alt_response(409, description="The payout was decided before")
    @blp.doc(security=BEARER_AUTH)
    def post(self, payout_id):
        """Approve a requested payout (admins): the amount is paid out."""
        session = db_session()
        payout = payouts.approve_payout(session, payout_id=payout_id, admin=current_user())
        session.commit()
        return payout


@blp.route("/billing/payouts/<uuid:payout_id>/reject")
class PayoutRejection(MethodView):
    decorators = [admin_required]

    @blp.arguments(PayoutRejectSchema)
    @blp.response(200, PayoutSchema)
    @blp.alt_response(409, description="The payout was decided before")
    @blp.doc(security=BEARER_AUTH)
    def post(self, data, payout_id):
        """Reject a requested payout (admins): the amount goes back to the host."""
        session = db_session()
        payout = payouts.reject_payout(
            session, payout_id=payout_id, admin=current_user(), reason=data["reason"]
        )
        session.commit()
        return payout
