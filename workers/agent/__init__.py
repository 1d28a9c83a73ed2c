"""The provider agent: `python -m workers.agent --api URL --key KEY --backend openai|simulate`.

It runs on the provider's machine, talks to CPX over the REST API with the provider's API key
(stdlib-free HTTP through `requests`), and imports nothing of Django: the exchange's rules live
on the server; the agent only heartbeats, takes offers, runs them and reports.
"""
