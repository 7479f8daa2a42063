#!/usr/bin/env python3
"""Bolt 4.1 -> Bolt 5.1 bridge used by warden's integration tests.

Why this exists
---------------
The Rust driver warden uses (neo4rs 0.9.0-rc.11) only speaks Bolt 4.0-4.4,
while the only graph server available to the tests (FalkorDB's built-in Bolt
endpoint) only speaks Bolt 5.1+.  Between Bolt 4.1 and Bolt 5.1 the requests
a driver sends are the same except for the login: Bolt 4 puts the credentials
into HELLO, Bolt 5.1 moved them to a separate LOGON message.

What it does, per client connection
-----------------------------------
1. Answers the client's handshake with Bolt 4.1 (if the client offers it).
2. Connects upstream and negotiates Bolt 5.1.
3. Splits the client's HELLO into a 5.1 HELLO (no credentials) plus a LOGON
   (scheme/principal/credentials), and gives the client one Bolt-4-style
   answer: the HELLO SUCCESS, or the first FAILURE (then closes).
4. Relays traffic until either side closes.  Server -> client bytes are
   forwarded untouched, except for the few messages fixed up below; the
   relay only walks the chunk headers to find message boundaries.

Fix-ups applied while relaying
------------------------------
Always (protocol translation / harmless):
  * Bolt 5 Node, Relationship and UnboundRelationship structures carry an
    extra element_id field that Bolt 4 clients cannot decode; records that
    contain them are re-encoded in their Bolt 4 shape.
  * A client GOODBYE is not forwarded; the bridge just closes both sides.
    (After a GOODBYE, FalkorDB leaves the *next* new Bolt connection hanging
    at its handshake.)
FalkorDB workarounds (disable with --strict for a real Bolt 5 server):
  * DISCARD is sent upstream as PULL.  FalkorDB streams every record right
    after RUN anyway, ignores PULL, but never answers DISCARD and wedges the
    connection (neo4rs' Graph::run() pipelines RUN+DISCARD).
  * RUN's "extra" map (db, mode, bookmarks, ...) is sent upstream empty.
    FalkorDB uses the *first key* of that map as the graph name, so neo4rs'
    {"mode": "w"} would select a graph literally named "mode".  With an empty
    map every query runs on FalkorDB's default graph, "falkordb".
  * After a FAILURE, FalkorDB neither answers the requests the client had
    pipelined behind the failed one, nor ignores later ones (it runs them).
    The bridge answers those with IGNORED itself until the client sends
    RESET, and drops the extra IGNORED that FalkorDB puts before that RESET's
    SUCCESS.

Usage::

    python3 bolt_bridge.py --listen 127.0.0.1:0 --upstream 127.0.0.1:7687

Once the listening socket is bound, exactly one line
``Listening on 127.0.0.1:<port>`` is printed to stdout (port 0 = pick a free
port).  Diagnostics go to stderr (-v / -vv).  Credentials are never logged.

Stdlib only (asyncio); Python 3.11+.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import struct
import sys
from typing import Any

log = logging.getLogger("bolt_bridge")

# ---------------------------------------------------------------------------
# Protocol constants
# ---------------------------------------------------------------------------

MAGIC = b"\x60\x60\xb0\x17"
# A version proposal/answer is 4 bytes: 0x00, range, minor, major.
BOLT_4_1 = b"\x00\x00\x01\x04"
NO_VERSION = b"\x00\x00\x00\x00"
# What we offer upstream.  FalkorDB does not really negotiate: it takes the
# *first* proposal, so 5.1 must come first.  5.1 is the only version we speak
# (5.0 has no LOGON, 5.3+ would want a bolt_agent in HELLO).
UPSTREAM_PROPOSALS = b"\x00\x00\x01\x05" + NO_VERSION * 3

# Message signatures (the tag byte of the message structure).
MSG_HELLO = 0x01
MSG_GOODBYE = 0x02
MSG_RESET = 0x0F
MSG_RUN = 0x10
MSG_DISCARD = 0x2F
MSG_PULL = 0x3F
MSG_LOGON = 0x6A
MSG_SUCCESS = 0x70
MSG_RECORD = 0x71
MSG_IGNORED = 0x7E
MSG_FAILURE = 0x7F
SUMMARIES = (MSG_SUCCESS, MSG_IGNORED, MSG_FAILURE)

# Keys of a Bolt 4 HELLO that move into the Bolt 5.1 LOGON message, in the
# order they are sent (FalkorDB insists on scheme, principal, credentials).
AUTH_KEYS = ("scheme", "principal", "credentials", "realm", "parameters")
# Keys of a Bolt 4 HELLO that Bolt 5.1's HELLO also accepts.
HELLO_KEYS = ("user_agent", "routing")

# Graph structures whose Bolt 5 form has extra element-id fields at the end:
# tag -> number of fields in the Bolt 4 form.
BOLT4_FIELD_COUNT = {0x4E: 3, 0x52: 5, 0x72: 3}   # Node, Relationship, UnboundRelationship
# Marker+tag byte pairs of their Bolt 5 forms (4, 8 and 4 fields), used as a
# cheap pre-filter before decoding a RECORD.
BOLT5_ENTITY_HEADERS = (b"\xb4\x4e", b"\xb8\x52", b"\xb4\x72")

MAX_LOGIN_MESSAGE = 1 << 20   # sanity cap on HELLO / upstream login replies
RELAY_READ_SIZE = 256 * 1024  # large reads for the relay
STREAM_LIMIT = 1 << 20
CONNECT_TIMEOUT = 5.0         # connecting + handshaking upstream
LOGIN_TIMEOUT = 30.0          # whole handshake + login exchange


# FalkorDB leaves Nagle on for its Bolt socket and writes some replies in
# several small send()s (HELLO then LOGON reply, IGNORED then SUCCESS after a
# RESET).  Its second send waits for our ACK, which Linux delays by ~40 ms
# unless the socket is in quick-ACK mode; that mode does not stick, so it is
# re-armed after every read from upstream.
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quickack(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if TCP_QUICKACK is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        except OSError:
            pass


class BoltError(Exception):
    """A protocol violation or an unsupported peer; the connection is dropped."""


# ---------------------------------------------------------------------------
# Minimal PackStream (v1) codec
# ---------------------------------------------------------------------------

class Structure:
    """A PackStream structure: a tag byte plus a list of fields."""

    __slots__ = ("tag", "fields")

    def __init__(self, tag: int, fields: list[Any]):
        self.tag = tag
        self.fields = fields

    def __repr__(self) -> str:  # debugging aid
        return f"Structure(0x{self.tag:02X}, {self.fields!r})"


def unpack(data: bytes, start: int = 0) -> tuple[Any, int]:
    """Decode the PackStream value at ``data[start]``; return (value, end)."""
    try:
        return _unpack(memoryview(data), start)
    except (IndexError, struct.error) as exc:
        raise BoltError("truncated PackStream value") from exc


def unpack_all(data: bytes) -> Any:
    """Decode one PackStream value that must span all of ``data``."""
    value, end = unpack(data)
    if end != len(data):
        raise BoltError("trailing bytes after PackStream value")
    return value


_INT_FORMATS = {0xC8: (">b", 1), 0xC9: (">h", 2), 0xCA: (">i", 4), 0xCB: (">q", 8)}
_SIZED = {  # marker -> (kind, length format, length size)
    0xCC: ("bytes", ">B", 1), 0xCD: ("bytes", ">H", 2), 0xCE: ("bytes", ">I", 4),
    0xD0: ("str", ">B", 1), 0xD1: ("str", ">H", 2), 0xD2: ("str", ">I", 4),
    0xD4: ("list", ">B", 1), 0xD5: ("list", ">H", 2), 0xD6: ("list", ">I", 4),
    0xD8: ("map", ">B", 1), 0xD9: ("map", ">H", 2), 0xDA: ("map", ">I", 4),
}


def _unpack(buf: memoryview, i: int) -> tuple[Any, int]:
    m = buf[i]
    i += 1
    if m < 0x80:                      # tiny int 0..127
        return m, i
    if m >= 0xF0:                     # tiny int -16..-1
        return m - 0x100, i
    hi = m & 0xF0
    if hi == 0x80:                    # tiny string
        return _text(buf, i, m & 0x0F)
    if hi == 0x90:                    # tiny list
        return _list(buf, i, m & 0x0F)
    if hi == 0xA0:                    # tiny map
        return _map(buf, i, m & 0x0F)
    if hi == 0xB0:                    # structure: marker, tag, fields
        tag = buf[i]
        fields, i = _list(buf, i + 1, m & 0x0F)
        return Structure(tag, fields), i
    if m == 0xC0:
        return None, i
    if m == 0xC1:
        return struct.unpack_from(">d", buf, i)[0], i + 8
    if m == 0xC2:
        return False, i
    if m == 0xC3:
        return True, i
    if m in _INT_FORMATS:
        fmt, size = _INT_FORMATS[m]
        return struct.unpack_from(fmt, buf, i)[0], i + size
    if m in _SIZED:
        kind, fmt, size = _SIZED[m]
        n = struct.unpack_from(fmt, buf, i)[0]
        i += size
        if kind == "bytes":
            return _take(buf, i, n)
        if kind == "str":
            return _text(buf, i, n)
        if kind == "list":
            return _list(buf, i, n)
        return _map(buf, i, n)
    raise BoltError(f"unknown PackStream marker 0x{m:02X}")


def _take(buf: memoryview, i: int, n: int) -> tuple[bytes, int]:
    if i + n > len(buf):
        raise BoltError("truncated PackStream value")
    return bytes(buf[i:i + n]), i + n


def _text(buf: memoryview, i: int, n: int) -> tuple[str, int]:
    raw, i = _take(buf, i, n)
    try:
        return raw.decode("utf-8"), i
    except UnicodeDecodeError as exc:
        raise BoltError("invalid UTF-8 in PackStream string") from exc


def _list(buf: memoryview, i: int, n: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(n):
        value, i = _unpack(buf, i)
        items.append(value)
    return items, i


def _map(buf: memoryview, i: int, n: int) -> tuple[dict[str, Any], int]:
    out = {}
    for _ in range(n):
        key, i = _unpack(buf, i)
        if not isinstance(key, str):
            raise BoltError("PackStream map key is not a string")
        out[key], i = _unpack(buf, i)
    return out, i


def pack(value: Any) -> bytes:
    """Encode one value as PackStream."""
    out = bytearray()
    _pack(value, out)
    return bytes(out)


def _pack_header(out: bytearray, n: int, tiny: int | None, m8: int, m16: int, m32: int) -> None:
    if n < 16 and tiny is not None:
        out.append(tiny + n)
    elif n < 0x100:
        out += struct.pack(">BB", m8, n)
    elif n < 0x10000:
        out += struct.pack(">BH", m16, n)
    else:
        out += struct.pack(">BI", m32, n)


def _pack(v: Any, out: bytearray) -> None:
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        if -16 <= v < 128:
            out += struct.pack(">b", v)
        elif -0x80 <= v < 0x80:
            out += struct.pack(">Bb", 0xC8, v)
        elif -0x8000 <= v < 0x8000:
            out += struct.pack(">Bh", 0xC9, v)
        elif -0x80000000 <= v < 0x80000000:
            out += struct.pack(">Bi", 0xCA, v)
        else:
            out += struct.pack(">Bq", 0xCB, v)
    elif isinstance(v, float):
        out += struct.pack(">Bd", 0xC1, v)
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        _pack_header(out, len(raw), 0x80, 0xD0, 0xD1, 0xD2)
        out += raw
    elif isinstance(v, (bytes, bytearray)):
        _pack_header(out, len(v), None, 0xCC, 0xCD, 0xCE)
        out += v
    elif isinstance(v, (list, tuple)):
        _pack_header(out, len(v), 0x90, 0xD4, 0xD5, 0xD6)
        for item in v:
            _pack(item, out)
    elif isinstance(v, dict):
        _pack_header(out, len(v), 0xA0, 0xD8, 0xD9, 0xDA)
        for key, item in v.items():
            _pack(str(key), out)
            _pack(item, out)
    elif isinstance(v, Structure):
        if len(v.fields) > 15:
            raise BoltError("structure with more than 15 fields")
        out += bytes((0xB0 + len(v.fields), v.tag))
        for item in v.fields:
            _pack(item, out)
    else:
        raise TypeError(f"cannot PackStream-encode {type(v).__name__}")


# ---------------------------------------------------------------------------
# Bolt message framing (chunking)
# ---------------------------------------------------------------------------

async def read_message(reader: asyncio.StreamReader) -> bytes:
    """Read one chunked Bolt message and return its de-chunked body."""
    parts: list[bytes] = []
    total = 0
    while True:
        size = int.from_bytes(await reader.readexactly(2), "big")
        if size == 0:
            if parts:
                return b"".join(parts)
            continue  # a lone 00 00 before a message is a NOOP (keep-alive)
        total += size
        if total > MAX_LOGIN_MESSAGE:
            raise BoltError("login message too large")
        parts.append(await reader.readexactly(size))


def frame_message(body: bytes) -> bytes:
    """Chunk a message body (chunks of at most 65535 bytes) and terminate it."""
    out = bytearray()
    for start in range(0, len(body), 0xFFFF):
        chunk = body[start:start + 0xFFFF]
        out += len(chunk).to_bytes(2, "big")
        out += chunk
    out += b"\x00\x00"
    return bytes(out)


def split_messages(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Find the complete chunked messages at the start of ``buf``.

    Returns ([(start, end, signature), ...], consumed).  ``buf[consumed:]`` is
    an incomplete message to be completed by the next read.  NOOP chunks
    (a lone 00 00 between messages) are reported with signature -1.
    Only chunk headers are read, the bodies are skipped.
    """
    msgs = []
    n = len(buf)
    i = 0
    while i + 2 <= n:
        size = (buf[i] << 8) | buf[i + 1]
        if size == 0:
            msgs.append((i, i + 2, -1))
            i += 2
            continue
        j = i + 2 + size
        while j + 2 <= n:                 # walk the remaining chunk headers
            size2 = (buf[j] << 8) | buf[j + 1]
            j += 2
            if size2 == 0:
                break
            j += size2
        else:
            break                         # message not complete yet
        # The signature is the 2nd body byte (after the structure marker);
        # it is in the first chunk unless that chunk is a single byte.
        sig = buf[i + 3] if size >= 2 else dechunk(buf, i, j)[1]
        msgs.append((i, j, sig))
        i = j
    return msgs, i


def dechunk(buf: bytes, start: int, end: int) -> bytes:
    """Body of the complete message ``buf[start:end]`` without chunk headers."""
    parts = []
    i = start
    while i < end:
        size = (buf[i] << 8) | buf[i + 1]
        parts.append(buf[i + 2:i + 2 + size])
        i += 2 + size
    return b"".join(parts)


def message_signature(body: bytes) -> int:
    """Signature byte of a message body (structure marker, then the tag)."""
    if len(body) < 2 or body[0] & 0xF0 != 0xB0:
        raise BoltError("message is not a PackStream structure")
    return body[1]


IGNORED_FRAME = frame_message(pack(Structure(MSG_IGNORED, [])))


def failure_message(code: str, message: str) -> bytes:
    return pack(Structure(MSG_FAILURE, [{"code": code, "message": message}]))


def normalize_failure(body: bytes, context: str, auth: bool = False) -> bytes:
    """Make a login FAILURE digestible for Bolt 4 clients.

    Bolt 4 clients expect both ``code`` and ``message`` (neo4rs panics on a
    HELLO FAILURE without a message); FalkorDB's LOGON failure only sends
    ``code``.  With ``auth`` a non-Neo4j code is replaced by
    Neo.ClientError.Security.Unauthorized, which drivers map to their
    authentication error (the original code is kept in the message).
    """
    try:
        msg = unpack_all(body)
        meta = msg.fields[0] if msg.fields and isinstance(msg.fields[0], dict) else {}
    except BoltError:
        meta = {}
    code = meta.get("code") if isinstance(meta.get("code"), str) else None
    text = meta.get("message") if isinstance(meta.get("message"), str) else None
    new_code = code or "Neo.DatabaseError.General.UnknownError"
    if auth and not new_code.startswith("Neo."):
        new_code = "Neo.ClientError.Security.Unauthorized"
    if text and new_code == code:
        return body
    return failure_message(
        new_code, text or f"{context} failed upstream ({code or 'no code given'})")


# ---------------------------------------------------------------------------
# Message rewriting
# ---------------------------------------------------------------------------

def bolt4_value(v: Any) -> tuple[Any, bool]:
    """Convert Bolt 5 graph structures in ``v`` to Bolt 4; (value, changed)."""
    if isinstance(v, Structure):
        changed = False
        keep = BOLT4_FIELD_COUNT.get(v.tag)
        fields = v.fields
        if keep is not None and len(fields) > keep:
            fields = fields[:keep]        # drop element_id(s)
            changed = True
        new_fields = []
        for f in fields:                  # Path: lists of nodes/relationships
            f, c = bolt4_value(f)
            new_fields.append(f)
            changed |= c
        return (Structure(v.tag, new_fields), True) if changed else (v, False)
    if isinstance(v, list):
        changed = False
        out = []
        for item in v:
            item, c = bolt4_value(item)
            out.append(item)
            changed |= c
        return (out, True) if changed else (v, False)
    if isinstance(v, dict):
        changed = False
        out = {}
        for key, item in v.items():
            out[key], c = bolt4_value(item)
            changed |= c
        return (out, True) if changed else (v, False)
    return v, False


def downgrade_record(body: bytes) -> bytes | None:
    """Bolt 4 form of a RECORD body, or None if it needs no change."""
    if not any(h in body for h in BOLT5_ENTITY_HEADERS):
        return None                       # fast path: no graph entities
    msg, changed = bolt4_value(unpack_all(body))
    return pack(msg) if changed else None


def strip_run_extra(body: bytes) -> bytes | None:
    """RUN body with an empty extra map, or None if it is already empty."""
    # RUN = B3 10 <query string> <parameters map> <extra map>
    if body[0] != 0xB3:
        return None
    _, i = unpack(body, 2)                # skip the query
    _, i = unpack(body, i)                # skip the parameters
    if body[i:] == b"\xa0":
        return None
    return body[:i] + b"\xa0"


# ---------------------------------------------------------------------------
# Version negotiation
# ---------------------------------------------------------------------------

def offers_bolt_4_1(proposals: bytes) -> bool:
    """True if any of the four 4-byte proposals covers Bolt 4.1.

    Proposal layout: byte 0 unused, byte 1 = range (how many minor versions
    below ``minor`` are also acceptable), byte 2 = minor, byte 3 = major.
    """
    for k in range(0, 16, 4):
        _, span, minor, major = proposals[k:k + 4]
        if major == 4 and minor - span <= 1 <= minor:
            return True
    return False


# ---------------------------------------------------------------------------
# Relay (after login)
# ---------------------------------------------------------------------------

class Relay:
    """Moves messages between a logged-in client and the upstream server."""

    def __init__(self, cid: int, c_reader, c_writer, u_reader, u_writer, workarounds: bool):
        self.cid = cid
        self.c_reader, self.c_writer = c_reader, c_writer
        self.u_reader, self.u_writer = u_reader, u_writer
        self.workarounds = workarounds
        # Bookkeeping for the FAILURE handling (see module docstring).
        self.requests = 0      # requests forwarded upstream (after login)
        self.summaries = 0     # SUCCESS/FAILURE/IGNORED delivered to the client
        self.failed = False    # FAILURE seen, client has not sent RESET yet
        self.resetting = False  # client RESET after a FAILURE is in flight

    async def run(self) -> None:
        """Relay both directions; when either side ends, stop both."""
        tasks = [asyncio.create_task(self.client_to_server()),
                 asyncio.create_task(self.server_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, pieces: list) -> None:
        writer.writelines(pieces)
        # drain() only blocks when the peer is slower than us (flow control).
        if writer.transport.get_write_buffer_size() > STREAM_LIMIT:
            await writer.drain()

    async def client_to_server(self) -> None:
        """Requests: small messages, looked at one by one."""
        carry = b""
        while True:
            data = await self.c_reader.read(RELAY_READ_SIZE)
            if not data:
                return
            buf = carry + data if carry else data
            msgs, consumed = split_messages(buf)
            carry = buf[consumed:]
            out: list = []
            last = 0
            for start, end, sig in msgs:
                if sig == MSG_GOODBYE:
                    # Don't forward it (FalkorDB bug); closing is equivalent.
                    out.append(buf[last:start])
                    await self._write(self.u_writer, out)
                    log.debug("[%d] client said GOODBYE", self.cid)
                    return
                if sig < 0 or not self.workarounds:
                    self.requests += sig >= 0
                    continue
                if self.failed:
                    if sig == MSG_RESET:
                        self.failed = False
                        self.resetting = True
                        self.requests += 1
                        continue
                    # Don't let FalkorDB run it: answer IGNORED like Bolt says.
                    out.append(buf[last:start])
                    last = end
                    self.c_writer.write(IGNORED_FRAME)
                    continue
                self.requests += 1
                if sig == MSG_DISCARD:
                    # DISCARD -> PULL: same fields, only the signature changes.
                    tag_at = start + 3 if (buf[start] << 8 | buf[start + 1]) >= 2 else None
                    if tag_at is not None:
                        out += (buf[last:tag_at], bytes((MSG_PULL,)))
                        last = tag_at + 1
                    else:
                        body = dechunk(buf, start, end)
                        out += (buf[last:start], frame_message(body[:1] + bytes((MSG_PULL,)) + body[2:]))
                        last = end
                elif sig == MSG_RUN:
                    try:
                        new_body = strip_run_extra(dechunk(buf, start, end))
                    except BoltError:
                        new_body = None           # leave anything odd alone
                    if new_body is not None:
                        out += (buf[last:start], frame_message(new_body))
                        last = end
            out.append(buf[last:consumed])
            await self._write(self.u_writer, out)

    async def server_to_client(self) -> None:
        """Responses: bytes pass through; only chunk headers are walked."""
        carry = b""
        while True:
            quickack(self.u_writer)
            data = await self.u_reader.read(RELAY_READ_SIZE)
            if not data:
                return
            buf = carry + data if carry else data
            msgs, consumed = split_messages(buf)
            carry = buf[consumed:]
            out: list = []
            last = 0
            # One C-speed scan of the whole read for Bolt 5 entity markers
            # instead of one per record (results can have many small records).
            entities = any(h in buf for h in BOLT5_ENTITY_HEADERS)
            for start, end, sig in msgs:
                if sig == MSG_RECORD:
                    # A record split into several chunks is always looked at:
                    # a marker could straddle a chunk header.
                    if entities or (buf[start] << 8 | buf[start + 1]) != end - start - 4:
                        try:
                            new_body = downgrade_record(dechunk(buf, start, end))
                        except BoltError:
                            new_body = None
                        if new_body is not None:
                            out += (buf[last:start], frame_message(new_body))
                            last = end
                    continue
                if sig not in SUMMARIES:
                    continue
                if self.resetting and self.workarounds:
                    if sig == MSG_IGNORED:
                        # FalkorDB's extra IGNORED before the RESET's SUCCESS:
                        # the client already got IGNOREDs from us.
                        out.append(buf[last:start])
                        last = end
                        continue
                    self.resetting = False
                self.summaries += 1
                if sig == MSG_FAILURE and self.workarounds:
                    self.failed = True
                    # Answer the requests pipelined behind the failed one.
                    pending = self.requests - self.summaries
                    if pending > 0:
                        out += (buf[last:end], IGNORED_FRAME * pending)
                        last = end
                        self.summaries += pending
            out.append(buf[last:consumed])
            await self._write(self.c_writer, out)


# ---------------------------------------------------------------------------
# Per-connection logic
# ---------------------------------------------------------------------------

class Bridge:
    def __init__(self, upstream_host: str, upstream_port: int,
                 upstream_auth: str, workarounds: bool):
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_auth = upstream_auth
        self.workarounds = workarounds
        self.tasks: set[asyncio.Task] = set()
        self.next_id = 0

    async def handle_client(self, c_reader: asyncio.StreamReader,
                            c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        self.next_id += 1
        cid = self.next_id
        # login() stores the upstream streams here as soon as they exist, so
        # they get closed below whatever happens.
        upstream: list = []
        try:
            try:
                async with asyncio.timeout(LOGIN_TIMEOUT):
                    ok = await self.login(cid, c_reader, c_writer, upstream)
            except TimeoutError:
                log.info("[%d] handshake/login timed out", cid)
                return
            if ok:
                await Relay(cid, c_reader, c_writer, *upstream, self.workarounds).run()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.debug("[%d] connection ended: %s", cid, type(exc).__name__)
        except BoltError as exc:
            log.info("[%d] protocol error: %s", cid, exc)
        except asyncio.CancelledError:
            pass  # shutdown
        finally:
            c_writer.close()
            if upstream:
                upstream[1].close()
            self.tasks.discard(task)
            log.debug("[%d] closed", cid)

    async def login(self, cid: int, c_reader: asyncio.StreamReader,
                    c_writer: asyncio.StreamWriter, upstream: list) -> bool:
        """Both handshakes and the login exchange.

        Returns True when the client is logged in and traffic may be relayed;
        ``upstream`` receives [reader, writer] of the upstream connection.
        """
        # -- client handshake: magic + four version proposals ---------------
        hello = await c_reader.readexactly(20)
        if hello[:4] != MAGIC:
            raise BoltError("bad handshake magic from client")
        if not offers_bolt_4_1(hello[4:]):
            log.info("[%d] client offers no Bolt 4.x range covering 4.1: %s",
                     cid, hello[4:].hex())
            c_writer.write(NO_VERSION)
            await c_writer.drain()
            return False
        c_writer.write(BOLT_4_1)
        await c_writer.drain()

        # -- upstream connection + handshake --------------------------------
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                u_reader, u_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port, limit=STREAM_LIMIT)
                upstream += (u_reader, u_writer)
                # One write: FalkorDB wants all 20 bytes in a single read.
                u_writer.write(MAGIC + UPSTREAM_PROPOSALS)
                await u_writer.drain()
                version = await u_reader.readexactly(4)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            # Server down: just drop the client, it sees a closed connection.
            log.info("[%d] upstream %s:%d unavailable: %s", cid,
                     self.upstream_host, self.upstream_port, type(exc).__name__)
            return False
        major, minor = version[3], version[2]
        if major != 5 or minor < 1:
            log.info("[%d] upstream chose unsupported Bolt version %s", cid, version.hex())
            return False

        # -- client HELLO -> upstream HELLO + LOGON -------------------------
        body = await read_message(c_reader)
        msg = unpack_all(body)
        if not isinstance(msg, Structure) or msg.tag != MSG_HELLO \
                or not msg.fields or not isinstance(msg.fields[0], dict):
            raise BoltError("first client message is not HELLO")
        extra = msg.fields[0]
        up_hello = {k: extra[k] for k in HELLO_KEYS if k in extra}
        if not isinstance(up_hello.get("routing"), dict):
            up_hello.pop("routing", None)  # 4.x allows null, 5.x wants a map
        up_hello.setdefault("user_agent", "warden-bolt-bridge/1.0")
        if minor >= 3:  # only if a server ignored our 5.1 proposal
            up_hello["bolt_agent"] = {"product": "warden-bolt-bridge/1.0"}
        if self.upstream_auth == "none":
            logon = {"scheme": "none"}  # --upstream-auth none: ignore client auth
        else:
            logon = {k: extra[k] for k in AUTH_KEYS if k in extra}
            logon.setdefault("scheme", "none")
        # HELLO and LOGON pipelined in one write.
        u_writer.write(
            frame_message(pack(Structure(MSG_HELLO, [up_hello])))
            + frame_message(pack(Structure(MSG_LOGON, [logon]))))
        del logon, extra, msg, body  # drop credentials as soon as possible
        await u_writer.drain()
        quickack(u_writer)

        # -- upstream replies -------------------------------------------------
        hello_reply = await read_message(u_reader)
        sig = message_signature(hello_reply)
        if sig != MSG_SUCCESS:
            log.info("[%d] upstream rejected HELLO (0x%02X)", cid, sig)
            if sig != MSG_FAILURE:
                hello_reply = failure_message(
                    "Neo.DatabaseError.General.UnknownError",
                    f"unexpected upstream reply 0x{sig:02X} to HELLO")
            c_writer.write(frame_message(normalize_failure(hello_reply, "HELLO")))
            await c_writer.drain()
            return False
        quickack(u_writer)
        logon_reply = await read_message(u_reader)
        sig = message_signature(logon_reply)
        if sig != MSG_SUCCESS:
            log.info("[%d] upstream rejected LOGON (0x%02X)", cid, sig)
            if sig != MSG_FAILURE:
                logon_reply = failure_message(
                    "Neo.ClientError.Security.Unauthorized",
                    f"unexpected upstream reply 0x{sig:02X} to LOGON")
            c_writer.write(frame_message(
                normalize_failure(logon_reply, "authentication", auth=True)))
            await c_writer.drain()
            return False
        # Success: the client sees the HELLO SUCCESS (server agent,
        # connection_id, ...); the LOGON SUCCESS is dropped.
        c_writer.write(frame_message(hello_reply))
        await c_writer.drain()
        log.debug("[%d] logged in, relaying", cid)
        return True


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def main_async(args: argparse.Namespace) -> None:
    bridge = Bridge(*args.upstream, args.upstream_auth, not args.strict)
    host, port = args.listen
    server = await asyncio.start_server(
        bridge.handle_client, host, port, limit=STREAM_LIMIT, backlog=1024,
        reuse_address=True)
    bound = server.sockets[0].getsockname()
    sys.stdout.write(f"Listening on {bound[0]}:{bound[1]}\n")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.debug("shutting down")
    server.close()
    for task in list(bridge.tasks):
        task.cancel()
    await asyncio.gather(*bridge.tasks, return_exceptions=True)
    await server.wait_closed()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Bolt 4.1 -> Bolt 5.1 bridge (see the module docstring).")
    parser.add_argument("--listen", type=parse_addr, required=True,
                        help="HOST:PORT to accept Bolt 4 clients on (port 0 = any free port)")
    parser.add_argument("--upstream", type=parse_addr, required=True,
                        help="HOST:PORT of the Bolt 5.1+ server")
    parser.add_argument("--upstream-auth", choices=("client", "none"), default="client",
                        help="client (default): LOGON with the client's HELLO credentials; "
                             "none: always LOGON with scheme 'none' (FalkorDB without "
                             "requirepass rejects every basic-auth LOGON)")
    parser.add_argument("--strict", action="store_true",
                        help="no FalkorDB workarounds (DISCARD, RUN extra, FAILURE handling)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr (-v: info, -vv: debug)")
    args = parser.parse_args()
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="bolt_bridge %(levelname)s %(message)s")
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
