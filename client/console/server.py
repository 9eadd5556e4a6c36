"""`raftka console`: the web UI's HTTP server (aiohttp): the pages in static/, the JSON API
under /api/, and the live change stream as server-sent events at /api/events.

How it works: one poller asks the cluster for a snapshot every POLL_INTERVAL_S (as
`raftka watch` does), turns the differences into events (views.LiveLog) and hands each to
every connected page's queue; a page too slow to keep up loses its stream and reconnects
(EventSource does so on its own) from the last event id it saw. Every other API call runs
one blocking SDK call on a worker thread (backend.py). Nothing is loaded from elsewhere:
the pages, script and style ship in this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from raftka.client.console.backend import BrowseRequest, ClusterBackend, ConsoleInputError
from raftka.client.console.throughput import ThroughputSeries
from raftka.client.console.views import LiveLog
from raftka.client.errors import RaftkaError
from raftka.client.transport import translate_rpc_error

log = logging.getLogger("raftka.console")
STATIC_DIR = Path(__file__).resolve().parent / "static"
# How often the live view asks the cluster for its state (s).
POLL_INTERVAL_S = 0.5
# Events queued for one page before it is cut off to reconnect.
SUBSCRIBER_QUEUE_MAX = 200
# Pages connected to the live stream at once.
SUBSCRIBERS_MAX = 100
# How often an idle stream sends a comment, so proxies keep it open (s).
KEEPALIVE_S = 15.0
# A request body (produce, create topic) larger than this is refused (bytes).
REQUEST_BODY_MAX_BYTES = 2 * 1024 * 1024
# Worker threads for blocking SDK calls.
WORKERS_MAX = 8
# How often the throughput chart scrapes the brokers' /metrics (s), and how long one may take.
THROUGHPUT_INTERVAL_S = 2.0
SCRAPE_TIMEOUT_S = 2.0
# How often a live tail with nothing new asks the leader again (s), records per push.
TAIL_IDLE_S = 0.5
TAIL_BATCH_RECORDS = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    def __init__(self, backend: ClusterBackend, metrics: list[str] | None = None) -> None:
        self.backend = backend
        self.metrics = list(metrics or [])  # brokers' metrics HOST:PORT, for the chart
        self.throughput = ThroughputSeries()
        self._sampler: asyncio.Task[None] | None = None
        self.live = LiveLog()
        self.poll_error = ""
        self._subscribers: set[asyncio.Queue[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(WORKERS_MAX)

    # ---------------------------------------------------------------------- the app
    def app(self) -> web.Application:
        app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES,
                              middlewares=[_errors_as_json])
        api = [
            web.get("/api/overview", self._overview),
            web.get("/api/topics", self._topics),
            web.post("/api/topics", self._create_topic),
            web.get("/api/topics/{name}", self._topic),
            web.delete("/api/topics/{name}", self._delete_topic),
            web.post("/api/topics/{name}/configs", self._alter_configs),
            web.post("/api/topics/{name}/partitions", self._add_partitions),
            web.post("/api/topics/{name}/delete-records", self._delete_records),
            web.get("/api/topics/{name}/partitions/{partition}/messages", self._messages),
            web.get("/api/topics/{name}/partitions/{partition}/tail", self._tail),
            web.post("/api/topics/{name}/messages", self._produce),
            web.get("/api/throughput", self._throughput),
            web.get("/api/groups", self._groups),
            web.get("/api/groups/{group}", self._group),
            web.post("/api/groups/{group}/reset-offsets", self._reset_offsets),
            web.delete("/api/groups/{group}", self._delete_group),
            web.get("/api/live", self._live_state),
            web.get("/api/events", self._events),
            web.get("/", self._index),
        ]
        app.add_routes(api)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        app.on_startup.append(self._start_polling)
        app.on_shutdown.append(self._stop)
        return app

    async def _start_polling(self, app: web.Application) -> None:
        self._poller = asyncio.create_task(self._poll_forever(), name="console-poller")
        if self.metrics:
            self._sampler = asyncio.create_task(self._sample_forever(), name="console-sampler")

    async def _stop(self, app: web.Application) -> None:
        for task in (self._poller, self._sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        await asyncio.to_thread(self.backend.close)

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        async with self._limit:
            return await asyncio.to_thread(function, *args)

    # ---------------------------------------------------------------------- pages
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._call(self.backend.overview))

    async def _topics(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"topics": await self._call(self.backend.topics)})

    async def _topic(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._call(self.backend.topic, request.match_info["name"]))

    async def _create_topic(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        configs = body.get("configs") or {}
        if not isinstance(configs, dict):
            raise ConsoleInputError("configs must be an object of name: value")
        created = await self._call(
            self.backend.create_topic, str(body.get("name", "")).strip(),
            _int(body.get("partitions", 0), "partitions"),
            _int(body.get("replication_factor", 0), "replication_factor"),
            {str(k): str(v) for k, v in configs.items()},
        )
        return web.json_response(created, status=201)

    async def _delete_topic(self, request: web.Request) -> web.StreamResponse:
        await self._call(self.backend.delete_topic, request.match_info["name"])
        return web.json_response({"deleted": request.match_info["name"]})

    async def _alter_configs(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        set_configs, delete = body.get("set") or {}, body.get("delete") or []
        if not isinstance(set_configs, dict) or not isinstance(delete, list):
            raise ConsoleInputError("set must be an object of name: value, delete a list")
        name = request.match_info["name"]
        await self._call(self.backend.alter_configs, name,
                         {str(k): str(v) for k, v in set_configs.items()},
                         [str(k) for k in delete])
        return web.json_response({"altered": name})

    async def _add_partitions(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        name = request.match_info["name"]
        count = _int(body.get("count"), "count")
        await self._call(self.backend.add_partitions, name, count)
        return web.json_response({"topic": name, "partitions": count})

    async def _delete_records(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        start = await self._call(self.backend.delete_records, request.match_info["name"],
                                 _int(body.get("partition"), "partition"),
                                 _int(body.get("before"), "before"))
        return web.json_response({"log_start_offset": start})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        browse = BrowseRequest(
            topic=request.match_info["name"],
            partition=_int(request.match_info["partition"], "partition"),
            start=query.get("from", "earliest"),
            value=_int(query.get("value", "0") or "0", "value"),
            limit=_int(query.get("limit", "50"), "limit"),
        )
        return web.json_response(await self._call(self.backend.browse, browse))

    async def _produce(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        partition = body.get("partition")
        headers = body.get("headers") or []
        if not isinstance(headers, list):
            raise ConsoleInputError("headers must be a list of {key, value}")
        produced = await self._call(
            self.backend.produce,
            request.match_info["name"],
            None if partition in (None, "") else _int(partition, "partition"),
            _utf8(body.get("key")),
            _utf8(body.get("value")),
            [(str(h.get("key", "")), _utf8(h.get("value"))) for h in headers],
        )
        return web.json_response(produced, status=201)

    async def _groups(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._call(self.backend.groups))

    async def _group(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self._call(self.backend.group, request.match_info["group"]))

    async def _reset_offsets(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        return web.json_response(await self._call(
            self.backend.reset_offsets, request.match_info["group"], str(body.get("topic", "")),
            str(body.get("to", "")), _int(body.get("offset", 0), "offset"),
        ))

    async def _delete_group(self, request: web.Request) -> web.StreamResponse:
        await self._call(self.backend.delete_group, request.match_info["group"])
        return web.json_response({"deleted": request.match_info["group"]})

    # ------------------------------------------------------------------- throughput
    async def _sample_forever(self) -> None:
        while True:
            texts = await asyncio.gather(*(asyncio.to_thread(_scrape, a) for a in self.metrics))
            self.throughput.add(int(time.time() * 1000), dict(zip(self.metrics, texts,
                                                                  strict=True)))
            await asyncio.sleep(THROUGHPUT_INTERVAL_S)

    async def _throughput(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"metrics": self.metrics, "interval_s": THROUGHPUT_INTERVAL_S,
                                  "points": self.throughput.to_json()})

    # -------------------------------------------------------------------- live tail
    async def _tail(self, request: web.Request) -> web.StreamResponse:
        """New records of one partition as server-sent events, from `from` (default: the
        end) on: the console keeps reading the leader from where it stopped, one page of
        records per event, whose id is the next offset (a page that reconnects resumes there,
        so a leader move loses nothing)."""
        topic = request.match_info["name"]
        partition = _int(request.match_info["partition"], "partition")
        # A reconnecting EventSource sends the id of the last page it got: the offset after it.
        start = request.headers.get("Last-Event-ID", "") or request.query.get("from", "")
        first = await self._call(self.backend.browse, BrowseRequest(
            topic, partition, "offset" if start else "latest",
            _int(start, "from") if start else 0, 1))
        position = first["from_offset"] if start else first["high_watermark"]
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        })
        await response.prepare(request)
        await response.write(f"event: position\ndata: {position}\n\n".encode())
        idle_s = 0.0
        try:
            while request.transport is not None and not request.transport.is_closing():
                try:
                    page = await self._call(self.backend.browse, BrowseRequest(
                        topic, partition, "offset", position, TAIL_BATCH_RECORDS))
                except (RaftkaError, grpc.RpcError) as exc:  # a leader move: say so, retry
                    if isinstance(exc, grpc.RpcError):
                        exc = translate_rpc_error(exc, "the partition's leader")
                    await response.write(f"event: problem\ndata: {json.dumps(str(exc))}\n\n"
                                         .encode())
                    await asyncio.sleep(TAIL_IDLE_S)
                    continue
                if page["records"]:
                    position = page["next_offset"]
                    await response.write(
                        f"id: {position}\ndata: {json.dumps(page['records'])}\n\n".encode())
                    idle_s = 0.0
                    continue
                await asyncio.sleep(TAIL_IDLE_S)
                idle_s += TAIL_IDLE_S
                if idle_s >= KEEPALIVE_S:
                    await response.write(b": keep-alive\n\n")
                    idle_s = 0.0
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # ------------------------------------------------------------------------- live
    async def _poll_forever(self) -> None:
        while True:
            try:
                snapshot = await self._call(self.backend.snapshot)
            except Exception as exc:
                self.poll_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            else:
                self.poll_error = ""
                for event in self.live.advance(snapshot, int(time.time() * 1000)):
                    self._publish({"event": event.to_json(), "state": self.live.state()})
            await asyncio.sleep(POLL_INTERVAL_S)

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # too slow: cut off; it reconnects with Last-Event-ID
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def _live_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({
            "state": self.live.state(),
            "events": [e.to_json() for e in self.live.events],
            "poll_error": self.poll_error,
        })

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if len(self._subscribers) >= SUBSCRIBERS_MAX:
            raise web.HTTPServiceUnavailable(text="too many live pages open")
        last_seen = _int(request.headers.get("Last-Event-ID", "0") or "0", "Last-Event-ID")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        })
        await response.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue(SUBSCRIBER_QUEUE_MAX)
        self._subscribers.add(queue)
        try:
            state = self.live.state()
            for event in self.live.since(last_seen):
                await _send(response, {"event": event.to_json(), "state": state})
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                await _send(response, message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers.discard(queue)
        return response


async def _send(response: web.StreamResponse, message: dict[str, Any]) -> None:
    seq = message["event"]["seq"]
    await response.write(f"id: {seq}\ndata: {json.dumps(message)}\n\n".encode())


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One error table: bad input 400, a cluster refusal 409 (503 when no broker answers),
    each as {"error": name, "message": text}."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ConsoleInputError as exc:
        return web.json_response({"error": "BAD_REQUEST", "message": str(exc)}, status=400)
    except RaftkaError as exc:
        name = type(exc).__name__
        status = 503 if exc.retriable else 409
        if name == "UnknownTopicOrPartitionError":
            status = 404
        return web.json_response({"error": name, "message": str(exc)}, status=status)
    except TimeoutError as exc:
        return web.json_response({"error": "TIMEOUT", "message": str(exc)}, status=504)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ConsoleInputError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ConsoleInputError("the body must be a JSON object")
    return body


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConsoleInputError(f"{what} must be an integer, got {value!r}") from None


def _utf8(value: Any) -> bytes | None:
    return None if value is None else str(value).encode()


def _scrape(address: str) -> str | None:
    """One broker's /metrics text, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics",
                                    timeout=SCRAPE_TIMEOUT_S) as reply:
            return str(reply.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


def run(bootstrap: str, host: str, port: int, metrics: list[str] | None = None) -> None:
    console = Console(ClusterBackend(bootstrap), metrics)
    print(f"Raftka console on http://{host}:{port}/ (cluster: {bootstrap}; metrics: "
          f"{','.join(metrics) if metrics else 'none, no throughput chart'})", flush=True)
    web.run_app(console.app(), host=host, port=port, print=None, access_log=None)
