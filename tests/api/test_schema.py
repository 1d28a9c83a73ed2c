"""The OpenAPI schema and its docs page."""

import pytest
import yaml

pytestmark = pytest.mark.django_db


class TestSchema:
    def test_serves_openapi_3_with_every_market_route(self, api_client):
        response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

        assert response.status_code == 200
        schema = response.json() if "json" in response["Content-Type"] else yaml.safe_load(response.content)
        assert schema["openapi"].startswith("3.")
        routes = {"/api/v1/jobs", "/api/v1/jobs/{id}/cancel", "/api/v1/operator/deposits"}
        assert routes <= set(schema["paths"])
        assert "ApiKey" in schema["components"]["securitySchemes"]

    def test_documents_the_idempotency_key_on_job_submission(self, api_client):
        response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

        parameters = response.json()["paths"]["/api/v1/jobs"]["post"]["parameters"]
        assert {"in": "header", "name": "Idempotency-Key"}.items() <= parameters[0].items()

    def test_renders_the_docs_page(self, api_client):
        response = api_client.get("/api/docs/")

        assert response.status_code == 200
        assert b"swagger" in response.content.lower()
        assert b"/api/schema/" in response.content
