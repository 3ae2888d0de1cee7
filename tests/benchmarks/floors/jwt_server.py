"""The request floor: a bare Flask route with the platform's JWT check and nothing else.

No database, no request log, no metrics, no flask-smorest: what an authenticated read costs at
the least under gunicorn with one gevent worker. tests/benchmarks/search.py divides GET /me by it.

    gunicorn -c tests/benchmarks/floors/gunicorn.conf.py tests.benchmarks.floors.jwt_server:app
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from app.auth.tokens import TokenVerifier
from app.config import get_settings

app = Flask(__name__)
verifier = TokenVerifier(get_settings())


@app.get("/me")
def me() -> Any:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return {"code": "unauthorized"}, 401
    claims = verifier.verify(token.strip())
    return {"clerk_id": claims.user_id, "email": claims.email}
