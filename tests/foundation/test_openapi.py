"""docs/openapi.json is the document the application generates (no drift)."""

from __future__ import annotations

import json
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "APP_ENV=development flask --app wsgi openapi"


def _generated(app) -> dict:
    from app.cli import openapi_document

    with app.app_context():
        return json.loads(openapi_document())


def test_committed_openapi_document_matches_the_generated_one(app):
    assert DOC.is_file(), f"docs/openapi.json is missing; write it with `{REGENERATE}`"
    committed = json.loads(DOC.read_text())
    generated = _generated(app)
    if committed != generated:
        added = sorted(set(generated.get("paths", {})) - set(committed.get("paths", {})))
        removed = sorted(set(committed.get("paths", {})) - set(generated.get("paths", {})))
        raise AssertionError(
            f"docs/openapi.json is out of date (paths added: {added}, removed: {removed}); "
            f"regenerate it with `{REGENERATE}`"
        )


def test_openapi_document_is_served_and_lists_the_foundation_endpoints(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    paths = response.json["paths"]
    for path in (
        "/api/v1/health",
        "/api/v1/me",
        "/api/v1/nodes",
        "/api/v1/nodes/{node_id}",
        "/api/v1/nodes/{node_id}/api-key",
    ):
        assert path in paths
    assert paths["/api/v1/me"]["get"]["summary"] == "Show the calling user."
    assert client.get("/api/docs").status_code == 200
