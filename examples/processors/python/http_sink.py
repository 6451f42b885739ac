"""`http-sink`: shoal's Python processor that POSTs each batch to an HTTP endpoint.

The same processor as the Rust `plugins/http-sink` and the JavaScript `http-sink.js`: each
batch becomes one JSON document, sent with the batch's first and last positions as its
idempotency key, and the host may checkpoint only after the endpoint accepted it. The
destination must be granted in `[plugin.sandbox] http`; anything else is refused by the
host before a connection is made.

Settings (`[plugin.settings]`):
    url            required, e.g. `https://ingest.example.com/v1/records`
    timeout_ms     connect, first-byte and between-bytes timeout (default 5000; the host
                   caps each at the call deadline)
    max_redirects  3xx responses followed (default 3); each hop is a new request the host
                   checks against the grants again

The body: `{"stream", "shard_id", "first", "last", "records": [{"sequence_number",
"sub_sequence_number", "partition_key", "approximate_arrival_ms", "data_base64"}]}`; the
header `Idempotency-Key: <stream>/<shard>/<first>-<last>` (positions as
`sequence.sub-sequence`) is the same on every retry of a batch, and, with
`consumer.stable_batches = true` in the host's config, when the batch is delivered again after
a crash or a lease move (the host cuts it with the same first and last record): then an
endpoint that stores each key once stores each record once. Without that setting such a
re-delivery may cut the records differently, under a new key. Outcomes: 2xx -> `batch-end`;
5xx, a timeout or a failed connection -> `retry`; 4xx, a refused destination or too many
redirects -> `fatal`.

Built against the `http-processor` world (wit/http-processor.wit) by ./build.sh. HTTP goes
through `wasi:http/outgoing-handler` with componentize-py's `poll_loop` helper (an asyncio
event loop over `wasi:io/poll`), adapted by build.sh into `http_poll_loop`: in this world
shoal's `types` interface and `wasi:http/types` share a name, so componentize-py calls them
`shoal_processor_types` and `wasi_http_types`, and the bundled helper's `types` import has
to say which.
"""

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import List, Optional, Tuple
from urllib import parse

from componentize_py_types import Err, Ok
from http_poll_loop import PollLoop, Sink, Stream, register
from wit_world import WitWorld as _World, log
from wit_world.imports import outgoing_handler
from wit_world.imports.shoal_processor_types import (
    Batch,
    CheckpointDirective,
    CheckpointDirective_BatchEnd,
    KinesisRecord,
    LogLevel,
    ProcessError_Fatal,
    ProcessError_Retry,
    ShardInfo,
    ShutdownReason,
)
from wit_world.imports.wasi_http_types import (
    ErrorCode,
    ErrorCode_HttpRequestDenied,
    ErrorCode_HttpRequestUriInvalid,
    Fields,
    FutureIncomingResponse,
    IncomingResponse,
    Method_Post,
    OutgoingRequest,
    RequestOptions,
    Scheme_Http,
    Scheme_Https,
)

# Bytes of an error response's body kept for the message.
ERROR_BODY_CHARS = 200


@dataclass
class _Settings:
    url: str = ""
    timeout_ns: int = 5_000_000_000
    max_redirects: int = 3


_settings = _Settings()


class _Refused(Exception):
    """The request cannot succeed as written: a denied destination or an invalid URL."""


@dataclass
class _Reply:
    status: int
    location: Optional[str]
    body: bytes


def _fatal(message: str) -> Err:
    return Err(ProcessError_Fatal(message))


def _retry(message: str) -> Err:
    return Err(ProcessError_Retry(message))


def _setting_int(settings: dict, key: str, default: int) -> int:
    text = settings.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise _fatal(f"setting `{key}` = {text!r} is not a whole number")


def _position(record: KinesisRecord) -> str:
    return f"{record.sequence_number}.{record.sub_sequence_number}"


def _describe(code: ErrorCode) -> str:
    """An `error-code` case in the words of its WIT name, with its payload if it has one."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    words = "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
    value = getattr(code, "value", None)
    return f"{words} ({value})" if value is not None else words


def _request(url: str, headers: List[Tuple[str, bytes]]) -> OutgoingRequest:
    parts = parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Refused(f"not an http(s) URL: {url!r}")
    request = OutgoingRequest(Fields.from_list(headers))
    request.set_method(Method_Post())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    path = parts.path or "/"
    request.set_path_with_query(f"{path}?{parts.query}" if parts.query else path)
    return request


async def _response(future: FutureIncomingResponse) -> IncomingResponse:
    """Wait for the response (poll_loop's `send`, which cannot pass request options)."""
    while True:
        outcome = future.get()
        if outcome is None:
            await register(asyncio.get_event_loop(), future.subscribe())
            continue
        if isinstance(outcome, Ok):
            if isinstance(outcome.value, Ok):
                return outcome.value.value
            raise outcome.value
        raise outcome


async def _post(url: str, headers: List[Tuple[str, bytes]], body: bytes) -> _Reply:
    request = _request(url, headers)
    outgoing = request.body()
    options = RequestOptions()
    options.set_connect_timeout(_settings.timeout_ns)
    options.set_first_byte_timeout(_settings.timeout_ns)
    options.set_between_bytes_timeout(_settings.timeout_ns)
    future = outgoing_handler.handle(request, options)
    sink = Sink(outgoing)
    try:
        await sink.send(body)
        sink.close()
    except Err:
        # The request failed while its body was being written (refused by the host, the
        # connection lost): the response future holds the reason.
        pass
    response = await _response(future)
    status = response.status()
    with response.headers() as fields:
        location = fields.get("location")
    stream = Stream(response.consume())
    kept = b""
    while (chunk := await stream.next()) is not None:
        if len(kept) < 4 * ERROR_BODY_CHARS:
            kept += chunk
    response.__exit__(None, None, None)
    future.__exit__(None, None, None)
    return _Reply(status, location[0].decode("utf-8", "replace") if location else None, kept)


def _send(url: str, headers: List[Tuple[str, bytes]], body: bytes) -> _Reply:
    """POST and wait, on a poll loop of its own; errors as `_Refused` or `Err(ErrorCode)`."""
    loop = PollLoop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(_post(url, headers, body))


def _resolve_location(current: str, location: str) -> str:
    """A `Location` value as an absolute URL (a path is relative to `current`'s origin)."""
    if "://" in location:
        return location
    parts = parse.urlsplit(current)
    return f"{parts.scheme}://{parts.netloc}{location}"


class WitWorld(_World):
    """The exports of the `http-processor` world."""

    def initialize(self, shard: ShardInfo, settings: List[Tuple[str, str]]) -> None:
        table = dict(settings)
        url = table.get("url")
        if not url:
            raise _fatal("setting `url` is required")
        _settings.url = url
        _settings.timeout_ns = _setting_int(table, "timeout_ms", 5000) * 1_000_000
        _settings.max_redirects = _setting_int(table, "max_redirects", 3)
        log(LogLevel.INFO, f"http-sink {shard.shard_id}: posting batches to {url}")

    def process(self, shard: ShardInfo, batch: Batch) -> CheckpointDirective:
        records = batch.records
        if not records:
            return CheckpointDirective_BatchEnd()
        first, last = _position(records[0]), _position(records[-1])
        key = f"{shard.stream_name}/{shard.shard_id}/{first}-{last}"
        body = json.dumps(
            {
                "stream": shard.stream_name,
                "shard_id": shard.shard_id,
                "first": first,
                "last": last,
                "records": [
                    {
                        "sequence_number": r.sequence_number,
                        "sub_sequence_number": r.sub_sequence_number,
                        "partition_key": r.partition_key,
                        "approximate_arrival_ms": r.approximate_arrival_ms,
                        "data_base64": base64.b64encode(bytes(r.data)).decode("ascii"),
                    }
                    for r in records
                ],
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = [
            ("content-type", b"application/json"),
            ("content-length", str(len(body)).encode("ascii")),
            ("idempotency-key", key.encode("utf-8")),
        ]

        url = _settings.url
        for _hop in range(_settings.max_redirects + 1):
            try:
                reply = _send(url, headers, body)
            except _Refused as refused:
                raise _fatal(f"POST {url}: {refused}")
            except Err as err:
                code = err.value
                if isinstance(code, (ErrorCode_HttpRequestDenied, ErrorCode_HttpRequestUriInvalid)):
                    raise _fatal(f"POST {url}: {_describe(code)} by the host (is it granted in [plugin.sandbox] http?)")
                raise _retry(f"POST {url}: {_describe(code)}")
            if 200 <= reply.status <= 299:
                return CheckpointDirective_BatchEnd()
            if 300 <= reply.status <= 399:
                if reply.location is None:
                    raise _fatal(f"POST {url}: {reply.status} without a Location")
                url = _resolve_location(url, reply.location)
                continue
            if 400 <= reply.status <= 499:
                text = reply.body.decode("utf-8", "replace")[:ERROR_BODY_CHARS]
                raise _fatal(f"POST {url}: {reply.status} {text}")
            raise _retry(f"POST {url}: {reply.status}")
        raise _fatal(f"POST {_settings.url}: more than {_settings.max_redirects} redirects")

    def shutdown(self, shard: ShardInfo, reason: ShutdownReason) -> None:
        pass
