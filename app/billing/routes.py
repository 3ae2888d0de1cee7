from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from app import idempotency
from app.auth.current import BEARER_AUTH, admin_required, current_user, login_required
from app.billing import audit, service
from app.billing.schemas import (
    BalanceSchema,
    CreditCreateSchema,
    InvariantReportSchema,
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
        return {"balance": current_user().balance}


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
