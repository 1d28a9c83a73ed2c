"""The worker's consumer (CELERY_WORKER_CONSUMER): Celery's, closing a lost broker connection in an
order that cannot kill the worker.

Why (issue 9, a Redis restart killed the worker 4 times in 5): when the broker connection breaks,
Celery 5.7's consumer first *collects* the connection, then closes it. With the Redis transport,
collecting closes the default channel only if no BRPOP is in flight; when one is (a prefork worker
waiting for its next task while another runs), closing that channel raises the connection error,
which is ignored, and the channel stays open — yet collecting still detaches the transport from its
connection (`transport.client = None`). The close that follows then closes the channel for real, and
closing a Redis channel restores its unacknowledged messages (an acks_late task was running: "Restoring
1 unacknowledged message(s)") through a new Redis connection, whose parameters it reads from
`transport.client`: AttributeError "'NoneType' object has no attribute 'hostname'". That error is not
a connection error, so it escapes the consumer and the worker stops ("Unrecoverable error").

The same detached transport kills the worker a second way: a late-acknowledged task that was running
when the connection broke finishes after the reconnect and acknowledges its message on the old,
closed channel — again through a new connection built from `transport.client`. Celery means to
prevent that by terminating such tasks ("cannot be acknowledged after a connection loss"), but it
marks them cancelled only after recording the retry in the result backend, which fails while Redis
is down.

So, here: (1) close the connection while the transport still knows its broker, then let Celery
collect what is left (nothing) and reconnect as usual — closing restores the unacknowledged messages
if Redis is back, or fails with a connection error that is ignored if it is not; (2) after Celery's
own handling, mark the late-acknowledged tasks of the lost connection as acknowledged so nothing
acknowledges on the dead channel. Their messages are still unacknowledged in Redis, which delivers
them again (at once when step 1 restored them, else after CPX_BROKER_VISIBILITY_TIMEOUT_S); every
task of CPX is idempotent, so a second run is harmless.
"""

from celery.utils.threads import bound_open_broker_sockets
from celery.worker.consumer.consumer import COLLECT_SOCKET_TIMEOUT
from celery.worker.consumer.consumer import Consumer as CeleryConsumer
from celery.worker.state import active_requests
from kombu.common import ignore_errors


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        lost = [r for r in tuple(active_requests) if r.task.acks_late and not r.acknowledged]
        if connection is not None:
            # As Celery does before its own teardown: a read on a silent peer must not hang.
            bound_open_broker_sockets(connection, COLLECT_SOCKET_TIMEOUT)
            ignore_errors(connection, connection.close)
        super().on_connection_error_after_connected(exc)
        for request in lost:
            request.acknowledged = True  # its delivery tag belongs to the lost channel (see above)
