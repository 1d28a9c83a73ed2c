"""The pages (issue 6): server-rendered views over the same services and selectors as the API.

A view translates the request, makes its service or selector calls, and renders; rules live in the
services (and the serializers, which the forms reuse). Modules: `accounts` (home, sign-up, API
keys), `provider` (the provider console), `consumer` (jobs, quotes, balance), `charts` (server-side
SVG for the operator dashboards in auctions/views.py), `common` (role checks, helpers).
"""
