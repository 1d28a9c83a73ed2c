"""Issue 14, what a new user tripped over in the API: the role refusal's grammar."""

import pytest

from tests.conftest import assert_error, bearer_client
from tests.factories import ConsumerFactory, OperatorFactory

pytestmark = pytest.mark.django_db


class TestRoleRefusals:
    def test_an_operator_endpoint_says_an_operator_account(self):
        response = bearer_client(ConsumerFactory()).get("/api/v1/operator/jobs")

        body = assert_error(response, 403, "permission_denied")
        assert body["message"] == "This needs an operator account or API key."

    def test_a_consumer_endpoint_says_a_consumer_account(self):
        response = bearer_client(OperatorFactory()).post("/api/v1/quote", {}, format="json")

        body = assert_error(response, 403, "permission_denied")
        assert body["message"] == "This needs a consumer account or API key."
