"""Pages (issue 6): landing, sign-up, log in/out, API keys, role checks and security headers."""

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from market.models import ApiKey, User
from market.services.accounts import api_key_create
from tests.conftest import NOW
from tests.factories import ConsumerFactory, OperatorFactory, ProviderUserFactory
from tests.integration.pages import signed_in

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-and-unusual-passphrase-42"


class TestHome:
    def test_an_anonymous_visitor_sees_the_landing_page_with_the_way_in(self, client):
        response = client.get("/")

        assert response.status_code == 200
        assert reverse("pages:signup") in response.content.decode()

    @pytest.mark.parametrize(
        ("factory", "target"),
        [
            (ProviderUserFactory, "pages:provider-console"),
            (ConsumerFactory, "pages:job-list"),
            (OperatorFactory, "ops:market"),
        ],
    )
    def test_a_signed_in_user_goes_to_the_start_page_of_its_role(self, factory, target):
        response = signed_in(factory()).get("/")

        assert response.status_code == 302
        assert response.url == reverse(target)


class TestSignUp:
    def test_a_provider_signs_up_is_logged_in_and_sent_to_register_its_profile(self, client):
        response = client.post(
            reverse("pages:signup"),
            {"username": "new-rig", "role": "provider", "password1": PASSWORD, "password2": PASSWORD},
        )

        assert response.status_code == 302
        assert response.url == reverse("pages:provider-profile")
        assert User.objects.get(username="new-rig").role == "provider"
        assert client.get(reverse("pages:provider-profile")).status_code == 200

    def test_a_consumer_signs_up_and_lands_on_its_jobs(self, client):
        response = client.post(
            reverse("pages:signup"),
            {"username": "lab", "role": "consumer", "password1": PASSWORD, "password2": PASSWORD},
        )

        assert response.url == reverse("pages:job-list")
        assert User.objects.get(username="lab").role == "consumer"

    def test_refuses_an_operator_role_mismatched_passwords_and_no_role_with_messages(self, client):
        response = client.post(
            reverse("pages:signup"),
            {"username": "sneaky", "role": "operator", "password1": PASSWORD, "password2": PASSWORD + "x"},
        )

        body = response.content.decode()
        assert response.status_code == 400
        assert not User.objects.filter(username="sneaky").exists()
        assert 'id="id_role_error"' in body and 'id="id_password2_error"' in body
        assert 'aria-describedby="id_password2_helptext id_password2_error"' in body or (
            'aria-describedby="id_password2_error"' in body
        )


class TestLogInAndOut:
    def test_logs_in_with_the_form_and_out_with_a_post(self, client):
        user = ConsumerFactory()
        user.set_password(PASSWORD)
        user.save()

        logged_in = client.post(reverse("pages:login"), {"username": user.username, "password": PASSWORD})
        logged_out = client.post(reverse("pages:logout"))

        assert logged_in.status_code == 302
        assert logged_out.status_code == 302
        assert client.get(reverse("pages:job-list")).status_code == 302  # back to the login page

    def test_a_wrong_password_is_a_message_not_an_error(self, client):
        response = client.post(reverse("pages:login"), {"username": "nobody", "password": "nope"})

        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()


class TestApiKeys:
    def test_a_new_key_is_shown_once_and_only_its_digest_is_kept(self):
        user = ProviderUserFactory()
        client = signed_in(user)

        created = client.post(reverse("pages:api-keys"), {"name": "rig agent"})
        again = client.get(reverse("pages:api-keys"))

        key = ApiKey.objects.get(user=user)
        shown = created.content.decode()
        raw = shown.split('id="new-key">')[1].split("<")[0]
        assert raw.startswith(f"cpx_{key.prefix}_") and key.role == "provider" and key.name == "rig agent"
        assert raw not in again.content.decode()
        assert created.headers["Cache-Control"] == "no-store"

    def test_revokes_its_own_key_and_gets_404_for_anothers(self):
        user, other = ConsumerFactory(), ConsumerFactory()
        mine, _ = api_key_create(user=user, role="consumer", now=NOW)
        theirs, _ = api_key_create(user=other, role="consumer", now=NOW)
        client = signed_in(user)

        revoked = client.post(reverse("pages:api-key-revoke", args=[mine.prefix]))
        refused = client.post(reverse("pages:api-key-revoke", args=[theirs.prefix]))

        mine.refresh_from_db()
        theirs.refresh_from_db()
        assert revoked.status_code == 302 and mine.revoked_at is not None
        assert refused.status_code == 404 and theirs.revoked_at is None

    def test_revoking_needs_a_post(self):
        user = ConsumerFactory()
        key, _ = api_key_create(user=user, role="consumer", now=NOW)

        response = signed_in(user).get(reverse("pages:api-key-revoke", args=[key.prefix]))

        assert response.status_code == 405


class TestRoleChecks:
    @pytest.mark.parametrize(
        "name", ["pages:provider-console", "pages:job-list", "pages:balance", "ops:market", "pages:api-keys"]
    )
    def test_an_anonymous_visitor_is_sent_to_log_in(self, client, name):
        response = client.get(reverse(name))

        assert response.status_code == 302
        assert response.url.startswith(reverse("pages:login"))

    @pytest.mark.parametrize(
        ("factory", "names"),
        [
            (
                ConsumerFactory,
                ["pages:provider-console", "pages:resource-new", "ops:market", "ops:round-list"],
            ),
            (ProviderUserFactory, ["pages:job-list", "pages:job-new", "pages:balance", "ops:settlements"]),
        ],
    )
    def test_a_page_of_another_role_is_forbidden(self, factory, names):
        client = signed_in(factory())

        for name in names:
            response = client.get(reverse(name))
            assert response.status_code == 403, name
            assert "Not allowed" in response.content.decode()


class TestSecurityHeaders:
    def test_pages_carry_csp_frame_nosniff_and_referrer_headers(self, client):
        response = client.get(reverse("pages:login"))

        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"

    def test_no_page_has_an_inline_script_or_style_attribute(self):
        consumer = ConsumerFactory()
        client = signed_in(consumer)

        for name in ("pages:job-list", "pages:job-new", "pages:balance", "pages:api-keys"):
            body = client.get(reverse(name)).content.decode()
            assert "<script>" not in body and " style=" not in body and "onclick" not in body, name
            assert '<script src="/static/vendor/htmx/htmx.min.js" defer></script>' in body

    def test_a_post_without_the_csrf_token_is_refused(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(ConsumerFactory())

        response = client.post(reverse("pages:api-keys"), {"name": "x"})

        assert response.status_code == 403

    def test_htmx_is_found_in_node_modules_as_a_static_file(self):
        found = finders.find("vendor/htmx/htmx.min.js")

        assert found is not None and "node_modules/htmx.org/dist" in str(found)
