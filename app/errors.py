"""Domain errors and the one JSON error shape every response uses.

Services raise :class:`DomainError` subclasses; the handlers registered here turn them, webargs'
validation errors, werkzeug's HTTP errors and unexpected exceptions into
``{"code", "status", "message", "errors"?}`` (the shape flask-smorest uses).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401


class PaymentRequired(DomainError):
    status_code = 402


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class InvalidTransition(Conflict):
    """A state change that the transition table does not allow."""


class ValidationFailed(DomainError):
    status_code = 422


class TooManyRequests(DomainError):
    status_code = 429


class ServiceUnavailable(DomainError):
    status_code = 503


class GatewayTimeout(DomainError):
    """Something the request waits on (an agent) did not answer in time."""

    status_code = 504


def error_body(
    code: int, message: str | None = None, errors: dict[str, Any] | None = None
) -> dict[str, Any]:
    status = HTTPStatus(code)
    body: dict[str, Any] = {
        "code": code,
        "status": status.phrase,
        "message": message or status.description,
    }
    if errors is not None:
        body["errors"] = _string_keys(errors)
    return body


def _string_keys(value: Any) -> Any:
    """Validation errors with every key a string: marshmallow keys list items by index, and a
    schema-level error adds string keys beside them, which JSON's sorted output cannot order."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(err: DomainError):  # type: ignore[no-untyped-def]
        response = jsonify(error_body(err.status_code, err.message, err.errors))
        response.status_code = err.status_code
        for key, value in err.headers.items():
            response.headers[key] = value
        return response

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):  # type: ignore[no-untyped-def]
        code = err.code or 500
        data = getattr(err, "data", None) or {}
        errors = data.get("errors") or data.get("messages")
        message = data.get("message") or _http_message(err, errors)
        if code == 400 and _is_invalid_json(errors):
            # Not a validation error: no field to blame, so no `errors`.
            message, errors = "The request body is not valid JSON.", None
        if errors is not None:
            errors = _flatten_location(errors)
        response = jsonify(error_body(code, message, errors))
        response.status_code = code
        for key, value in (data.get("headers") or {}).items():
            response.headers[key] = value
        if code == 405 and err.get_response().headers.get("Allow"):
            response.headers["Allow"] = err.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error", exc_info=err)
        response = jsonify(error_body(500, "An internal error occurred; it has been logged."))
        response.status_code = 500
        return response


def _http_message(err: HTTPException, errors: Any) -> str:
    if err.code == 422 and errors:
        return "The request is not valid; see errors for each field."
    if err.code == 400 and err.description and "JSON" in str(err.description):
        return "The request body is not valid JSON."
    if err.code == 413:
        return "The request body is too large."
    return HTTPStatus(err.code or 500).description


def _is_invalid_json(errors: Any) -> bool:
    """webargs reports an undecodable body as {"json": ["Invalid JSON body."]}."""
    return isinstance(errors, dict) and "Invalid JSON body." in (errors.get("json") or [])


def _flatten_location(errors: Any) -> Any:
    """webargs nests errors by location ({"json": {...}}); keep one level when only one is present."""
    if isinstance(errors, dict) and len(errors) == 1:
        ((location, inner),) = errors.items()
        if location in ("json", "query", "querystring", "headers", "view_args", "path", "form"):
            return inner
    return errors
