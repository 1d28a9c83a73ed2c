"""ASGI entry point of the production web process: `gunicorn -c config/gunicorn.py config.asgi`
(uvicorn workers). One port serves everything:

- the async paths (ASYNC_PATHS: the agents' offer channel, auctions/api/agent_offers.py) go to
  Django's ASGI handler WITHOUT the middleware stack, where a waiting request is a coroutine, not a
  thread. Without: Django runs each sync middleware in its one thread-sensitive thread, and a sync
  middleware's call to the async view below it holds that thread for the whole wait, so a single
  waiting agent would stall every other request of the process. The view authenticates itself and
  needs none of it (no session, CSRF, pages);
- every other request goes to Django's WSGI handler on a pool of THREADS threads per worker, as
  under gunicorn gthread; the agents' other calls (AGENT_PREFIX: accept, progress, complete,
  heartbeats, the sync long-poll) on a pool of their own, AGENT_THREADS threads. A bulkhead: a
  round's commit sends a burst of hundreds of accepts and completions at once, which on one shared
  pool queued every consumer's and operator's call behind them (bench/agents.py: API p99 1.5 s at
  1,000 agents); now a burst of the fleet waits only for the fleet's threads. Why not Django's ASGI
  handler for those too: it runs every sync view in ONE thread per process (asgiref's
  thread-sensitive mode), so one slow or waiting sync request (the sync long-poll
  `GET /agent/leases?wait=S`, a file upload) would stall all the others. The sync API, its
  long-poll caps (auctions/api/long_poll.py) and its middleware stay exactly as they are under WSGI.

The WSGI bridge reads the whole request body, runs the app in a thread and sends the whole answer
(responses are JSON, pages, or files bounded by CPX_FILE_MAX_BYTES), and always closes the
response, which is what fires Django's request_finished (connections back to the pool).
"""

import asyncio
import io
import os
from concurrent.futures import ThreadPoolExecutor

import django
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.wsgi import get_wsgi_application
from django.urls import URLResolver
from django.urls.resolvers import RegexPattern

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

ASYNC_PATHS = frozenset({"/api/v1/agent/offers"})
AGENT_PREFIX = "/api/v1/agent/"
THREADS = int(os.environ.get("GUNICORN_THREADS", "4"))
AGENT_THREADS = int(os.environ.get("GUNICORN_AGENT_THREADS", "2"))


class AsyncChannelHandler(ASGIHandler):
    """Django's ASGI handler with an empty middleware stack (see above): URL resolution, the view,
    and the view's own JSON answers; an unexpected error still answers through handler500.

    Two costs of Django's handler that a reconnecting fleet pays per request are cut (measured in
    process: ~1 ms of URL resolution through the whole URLconf, ~0.5 ms starting a thread): the
    channel's paths resolve against their own small URLconf, and a request is not wrapped in a
    ThreadSensitiveContext, which starts a new thread per request for the sync receivers of
    request_started/finished (they run on asgiref's one shared thread instead; the view's own
    database calls run on its pools either way)."""

    resolver = URLResolver(RegexPattern(r"^/api/v1/"), "auctions.api.agent_offers")  # imported lazily

    async def __call__(self, scope, receive, send):
        await self.handle(scope, receive, send)

    def resolve_request(self, request):
        request.resolver_match = self.resolver.resolve(request.path_info)
        return request.resolver_match

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(
            self._get_response_async if is_async else self._get_response
        )


django.setup(set_prefix=False)
django_asgi = AsyncChannelHandler()
django_wsgi = get_wsgi_application()
_threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="cpx-wsgi")
_agent_threads = ThreadPoolExecutor(max_workers=AGENT_THREADS, thread_name_prefix="cpx-wsgi-agent")


def _environ(scope: dict, body: bytes) -> dict:
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf8").decode("latin1"),
        "PATH_INFO": scope["path"].encode("utf8").decode("latin1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin1").upper().replace("-", "_")
        value = raw_value.decode("latin1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif name != "CONTENT_LENGTH":
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _run_wsgi(environ: dict) -> tuple[int, list, bytes]:
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = int(status.split(" ", 1)[0]), headers

    result = django_wsgi(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], started["headers"], body


async def _wsgi(scope, receive, send) -> None:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    pool = _agent_threads if scope["path"].startswith(AGENT_PREFIX) else _threads
    status, headers, body = await asyncio.get_running_loop().run_in_executor(
        pool, _run_wsgi, _environ(scope, b"".join(chunks))
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(name.encode("latin1"), value.encode("latin1")) for name, value in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"] in ASYNC_PATHS:
        await django_asgi(scope, receive, send)
    elif scope["type"] == "http":
        await _wsgi(scope, receive, send)
    else:
        raise ValueError(f"unsupported ASGI scope type {scope['type']!r}")
