"""The API contract a generated client relies on: every status documented with the one error body,
query parameters refused when empty, unknown API paths answered in JSON, docs served from here."""

import re

import pytest
from django.test import Client

from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory, ProviderFactory

pytestmark = pytest.mark.django_db

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture
def schema(api_client):
    return api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


class TestSchemaDocumentsErrors:
    def test_the_error_body_is_a_component_with_code_message_and_extra(self, schema):
        error = schema["components"]["schemas"]["Error"]

        assert set(error["required"]) == {"code", "message", "extra"}
        assert error["properties"]["extra"]["type"] == "object"

    def test_every_operation_documents_authentication_rate_limit_and_its_own_errors(self, schema):
        for path, method, operation in operations(schema):
            responses = operation["responses"]
            expected = {"401", "403", "429"}
            if "{" in path:
                expected.add("404")
            if method != "GET":
                expected |= {"400", "409"}
            if "requestBody" in operation:
                expected.add("415")
            if any(p["in"] == "query" for p in operation.get("parameters", [])):
                expected.add("400")
            assert expected <= set(responses), (method, path, sorted(responses))
            for code in expected:
                body = responses[code]["content"]["application/json"]["schema"]
                assert body == {"$ref": ERROR_REF}, (method, path, code)

    def test_the_rate_limit_answer_documents_retry_after(self, schema):
        assert "Retry-After" in schema["paths"]["/api/v1/jobs"]["post"]["responses"]["429"]["headers"]

    def test_a_read_without_parameters_documents_no_400(self, schema):
        assert "400" not in schema["paths"]["/api/v1/balance"]["get"]["responses"]


class TestQueryParameters:
    @pytest.mark.parametrize("query", ["kind=", "status=", "kind=&status=QUEUED", "region="])
    def test_an_empty_filter_value_is_refused(self, query):
        client = bearer_client(ConsumerFactory())

        response = client.get(f"/api/v1/jobs?{query}")

        body = assert_error(response, 400, "invalid")
        fields = body["extra"]["fields"]
        assert all(value == ["This parameter may not be empty."] for value in fields.values())
        assert set(body["extra"]["fields"]) == {p.split("=")[0] for p in query.split("&") if p.endswith("=")}

    def test_an_unknown_filter_value_is_refused(self):
        client = bearer_client(ConsumerFactory())

        response = client.get("/api/v1/jobs?kind=BOGUS")

        assert "kind" in assert_error(response, 400, "invalid")["extra"]["fields"]

    def test_an_empty_value_is_refused_on_every_api_list(self):
        operator = bearer_client(OperatorFactory())
        provider = bearer_client(ProviderFactory().user)

        answers = [
            operator.get("/api/v1/rounds?status="),
            operator.get("/api/v1/settlements?status="),
            operator.get("/api/v1/operator/providers?tier="),
            provider.get("/api/v1/agent/leases?wait="),
        ]

        for response in answers:
            assert_error(response, 400, "invalid")

    def test_a_date_time_with_an_offset_postgresql_refuses_is_read_in_utc(self):
        client = bearer_client(ConsumerFactory())

        response = client.get("/api/v1/jobs", {"created_before": "0232-12-26T08:18:52.7-23:46"})

        assert response.status_code == 200, response.content

    def test_a_date_time_that_leaves_the_calendar_in_utc_is_refused(self):
        client = bearer_client(ConsumerFactory())

        response = client.get("/api/v1/jobs", {"created_after": "0001-01-01T00:00:00+15:00"})

        assert "created_after" in assert_error(response, 400, "invalid")["extra"]["fields"]

    def test_a_filter_with_a_value_still_filters(self):
        client = bearer_client(ConsumerFactory())

        response = client.get("/api/v1/jobs?kind=INFERENCE")

        assert response.status_code == 200

    def test_pages_outside_the_api_keep_blank_query_values(self):
        response = Client().get("/healthz?probe=")

        assert response.status_code == 200


class TestUnknownPaths:
    @pytest.mark.parametrize(
        "path", ["/api/v1/jobs/abc", "/api/v1/nope", "/api/v2/jobs", "/api/v1/jobs/1/nope"]
    )
    def test_an_unknown_api_path_answers_json(self, path):
        client = bearer_client(ConsumerFactory())

        response = client.get(path)

        assert response["Content-Type"] == "application/json"
        assert assert_error(response, 404, "not_found")["extra"] == {"path": path}

    def test_an_unknown_page_stays_html(self):
        response = Client().get("/no-such-page")

        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")


class TestSwaggerUi:
    def test_the_docs_page_loads_its_assets_from_this_server(self):
        page = Client().get("/api/docs/")

        assets = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
        assert page.status_code == 200
        assert assets and all(asset.startswith("/static/drf_spectacular_sidecar/") for asset in assets)
        for asset in assets:
            assert Client().get(asset).status_code == 200, asset
