"""Operating CPX: liveness and readiness probes, Prometheus metrics, structured logs with request
and task ids. It sits on top of the apps (it reads their selectors and models) and nothing imports it
but the URL map, the settings and the gunicorn configuration."""
