"""A confab client in Python, written from the comments of proto/chat.proto.

It exists to prove that programs confab did not write can speak confab: the gRPC control plane
through stubs generated from the proto when this module is imported, and the direct peer path
(Noise_IK_25519_ChaChaPoly_BLAKE2s over 2-byte length-prefixed TCP frames) with the
`noiseprotocol` package.

The pieces, each usable alone:
- `pb`, `pb_grpc`: the generated modules (`chat_pb2`, `chat_pb2_grpc`).
- `Client` (Auth: register, login) → `Session` (every Chat call with the bearer token, an
  `EventStream`, heartbeats, grants held, the listener's allowlist kept in step with events).
- `PeerKeys`, `send_peer_message` (the initiator) and `PeerListener` (the responder).
- `rpc_error_details`: RetryInfo / BadRequest from a failed call.

Nothing here sleeps to synchronise: every wait is on a condition with a deadline.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from noise.connection import Keypair, NoiseConnection

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto" / "chat.proto"

# How long any awaited event may take before a wait fails. Generous: a loaded CI machine is slow,
# and a wait that is met returns at once.
PATIENCE = 10.0


# ------------------------------------------------------------------------------------------------
# Stubs, generated now from the proto (never committed)


def generate_stubs(proto: Path, out_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Runs `python -m grpc_tools.protoc` on `proto` into `out_dir` and imports the result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto),
        ],
        check=True,
    )
    # chat_pb2_grpc does `import chat_pb2`, so the directory must be on the path.
    sys.path.insert(0, str(out_dir))
    import chat_pb2
    import chat_pb2_grpc

    return chat_pb2, chat_pb2_grpc


if os.environ.get("CONFAB_STUBS_DIR"):
    _STUBS_DIR = Path(os.environ["CONFAB_STUBS_DIR"])
else:
    _STUBS_DIR = Path(tempfile.mkdtemp(prefix="confab-stubs-"))
    atexit.register(shutil.rmtree, _STUBS_DIR, ignore_errors=True)
pb, pb_grpc = generate_stubs(PROTO, _STUBS_DIR)


# ------------------------------------------------------------------------------------------------
# Errors


@dataclass
class ErrorDetails:
    """What a failed call said: its code, its sentence, and the google.rpc details it carried."""

    code: grpc.StatusCode
    message: str
    retry_after_s: Optional[float] = None
    # (field, description) pairs from google.rpc.BadRequest.
    violations: list[tuple[str, str]] = field(default_factory=list)


def rpc_error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decodes the `grpc-status-details-bin` trailer of a failed call (RetryInfo, BadRequest)."""
    call: Any = error
    details = ErrorDetails(code=call.code(), message=call.details() or "")
    status = rpc_status.from_call(call)
    if status is None:
        return details
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            any_detail.Unpack(info)
            details.retry_after_s = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_detail.Unpack(bad)
            details.violations += [(v.field, v.description) for v in bad.field_violations]
    return details


# ------------------------------------------------------------------------------------------------
# Waiting for things that arrive on another thread


class Timeline:
    """Items that arrive from another thread, in order, with waits that have deadlines.

    `expect` takes the first item matching a predicate and leaves the others for later waits, so
    a test can wait for what it cares about without depending on unrelated interleavings.
    """

    def __init__(self, describe: Callable[[Any], str] = repr) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition()
        self._closed: Optional[str] = None
        self._describe = describe

    def push(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self, why: str) -> None:
        """No more items will come; waits fail at once with `why` instead of timing out."""
        with self._cond:
            self._closed = why
            self._cond.notify_all()

    def expect(
        self, what: str, where: Callable[[Any], bool], within: float = PATIENCE
    ) -> Any:
        """Removes and returns the first item matching `where`, waiting up to `within` seconds."""
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for i, item in enumerate(self._items):
                    if where(item):
                        return self._items.pop(i)
                left = deadline - time.monotonic()
                if self._closed is not None or left <= 0:
                    why = self._closed or f"nothing came within {within}s"
                    raise AssertionError(
                        f"waiting for {what}: {why}; unclaimed: {self.pending()}"
                    )
                self._cond.wait(left)

    def expect_none_before(
        self,
        unwanted: str,
        is_unwanted: Callable[[Any], bool],
        barrier: str,
        is_barrier: Callable[[Any], bool],
        within: float = PATIENCE,
    ) -> Any:
        """Waits for the barrier item and fails if an unwanted one arrived before it.

        The way to check that something did not happen without sleeping: do it, then do
        something that must arrive after it, and check the order.
        """
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for i, item in enumerate(self._items):
                    if is_unwanted(item):
                        raise AssertionError(f"{unwanted} arrived: {self._describe(item)}")
                    if is_barrier(item):
                        return self._items.pop(i)
                left = deadline - time.monotonic()
                if self._closed is not None or left <= 0:
                    why = self._closed or f"nothing came within {within}s"
                    raise AssertionError(
                        f"waiting for {barrier}: {why}; unclaimed: {self.pending()}"
                    )
                self._cond.wait(left)

    def pending(self) -> list[str]:
        return [self._describe(i) for i in self._items]


def kind_of(event: Any) -> str:
    """The name of the `Event.kind` oneof field that is set, e.g. "message"."""
    return event.WhichOneof("kind") or ""


def _describe_event(event: Any) -> str:
    kind = kind_of(event)
    inner = str(getattr(event, kind)).replace("\n", " ").strip() if kind else ""
    return f"{kind}{{{inner}}}"


# ------------------------------------------------------------------------------------------------
# The control plane


def new_message_id() -> str:
    """A sender-chosen message id: unique, 1–64 bytes."""
    return uuid.uuid4().hex


class Client:
    """A connection to a confab server: the Auth service, and `login` to get a `Session`."""

    def __init__(self, target: str) -> None:
        # `target` is host:port, as the server prints it ("confab listening on 127.0.0.1:4119").
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.auth = pb_grpc.AuthStub(self.channel)

    def register(self, username: str, password: str) -> str:
        """Creates an account; returns the name as registered."""
        response = self.auth.Register(
            pb.RegisterRequest(username=username, password=password), timeout=PATIENCE
        )
        return response.username

    def login(
        self,
        username: str,
        password: str,
        listener: Optional["PeerListener"] = None,
    ) -> "Session":
        """Starts a session. With a `listener`, its port and public key go into the request,
        and accepted address requests are allowed on it."""
        request = pb.LoginRequest(username=username, password=password)
        if listener is not None:
            request.peer_port = listener.port
            request.peer_public_key = listener.keys.public
        response = self.auth.Login(request, timeout=PATIENCE)
        return Session(self, response, listener)

    def close(self) -> None:
        self.channel.close()


@dataclass
class Grant:
    """Another user's peer address and key, from AddressGranted."""

    user: str
    host: str
    port: int
    public_key: bytes


class Session:
    """A logged-in user: every Chat call carries `authorization: Bearer <token>`."""

    def __init__(
        self, client: Client, login: Any, listener: Optional["PeerListener"]
    ) -> None:
        self.client = client
        self.username: str = login.username
        self.heartbeat_interval_s = login.heartbeat_interval_ms / 1000
        self.max_message_bytes: int = login.max_message_bytes
        self.metadata = (("authorization", f"Bearer {login.token}"),)
        self.chat = pb_grpc.ChatStub(client.channel)
        self.listener = listener
        # Grants we hold, by lower-cased username (usernames compare ignoring ASCII case).
        self.grants: dict[str, Grant] = {}
        self._grants_lock = threading.Lock()
        # Highest seq acknowledged so far; heartbeats repeat it.
        self.acked_seq = 0
        self.stream: Optional[EventStream] = None
        self._stop = threading.Event()
        self._heartbeats = threading.Thread(target=self._beat, daemon=True)
        self._heartbeats.start()

    @property
    def events(self) -> "EventStream":
        """The current event stream (after `subscribe`)."""
        if self.stream is None:
            raise AssertionError(f"{self.username} has not subscribed")
        return self.stream

    @property
    def peer(self) -> "PeerListener":
        """The peer listener this session logged in with."""
        if self.listener is None:
            raise AssertionError(f"{self.username} logged in without a peer listener")
        return self.listener

    # -- calls --------------------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        return method(request, metadata=self.metadata, timeout=PATIENCE)

    def subscribe(
        self, resume_after: Optional[int] = None, presence_batches: bool = False
    ) -> "EventStream":
        """Opens the event stream (replacing any previous one). By default it resumes after the
        last acknowledged seq, so nothing acknowledged is shown twice. With `presence_batches`,
        presence arrives as `presence_batch` events, one per window."""
        if self.stream is not None:
            self.stream.close()
        after = self.acked_seq if resume_after is None else resume_after
        call = self.chat.Subscribe(
            pb.SubscribeRequest(resume_after=after, presence_batches=presence_batches),
            metadata=self.metadata,
        )
        self.stream = EventStream(call, on_event=self._on_event)
        return self.stream

    def ack(self, seq: int) -> None:
        """Acknowledges every direct message up to `seq` now (they leave the inbox)."""
        self.acked_seq = max(self.acked_seq, seq)
        self._call(self.chat.Heartbeat, pb.HeartbeatRequest(ack_seq=self.acked_seq))

    def send_message(self, to: str, body: str, message_id: Optional[str] = None) -> Any:
        return self._call(
            self.chat.SendMessage,
            pb.SendMessageRequest(to=to, body=body, message_id=message_id or new_message_id()),
        )

    def broadcast(self, body: str) -> Any:
        return self._call(self.chat.Broadcast, pb.BroadcastRequest(body=body))

    def list_online(self, since_seconds: int = 0) -> list[str]:
        response = self._call(
            self.chat.ListOnline, pb.ListOnlineRequest(since_seconds=since_seconds)
        )
        return [u.username for u in response.users]

    def block(self, user: str) -> None:
        self._call(self.chat.Block, pb.BlockRequest(user=user))

    def unblock(self, user: str) -> None:
        self._call(self.chat.Unblock, pb.UnblockRequest(user=user))

    def list_blocked(self) -> list[str]:
        return list(self._call(self.chat.ListBlocked, pb.ListBlockedRequest()).users)

    def request_address(self, user: str) -> Any:
        """Asks `user` for their address; the answer comes on the stream (or at once in
        `response.grant` when a valid grant is already held)."""
        response = self._call(self.chat.RequestAddress, pb.RequestAddressRequest(user=user))
        if response.HasField("grant"):
            self._hold(response.grant)
        return response

    def respond(self, request: Any, accept: bool) -> None:
        """Answers an AddressRequested event. Accepting allows the requester's key on our
        listener first, so its first connection cannot race the allowlist."""
        if accept and self.listener is not None:
            self.listener.allow(request.from_public_key, getattr(request, "from"))
        self._call(
            self.chat.RespondAddressRequest,
            pb.RespondAddressRequestRequest(request_id=request.request_id, accept=accept),
        )

    def logout(self) -> None:
        self._stop.set()
        self._call(self.chat.Logout, pb.LogoutRequest(ack_seq=self.acked_seq))

    def close(self) -> None:
        """Stops the heartbeats and the stream without logging out (as a crashed client would)."""
        self._stop.set()
        if self.stream is not None:
            self.stream.close()

    # -- the peer path ------------------------------------------------------------------------

    def grant_for(self, user: str) -> Optional[Grant]:
        with self._grants_lock:
            return self.grants.get(user.lower())

    def send_private(self, to: str, body: str, message_id: Optional[str] = None) -> str:
        """Sends `body` to `to` over the peer path; if that fails, the same message (same
        message_id) goes through the server. Returns "DIRECT", "DELIVERED" or "STORED"."""
        if self.listener is None:
            raise ValueError("a session without a peer listener has no key to send with")
        grant = self.grant_for(to)
        if grant is None:
            raise ValueError(f"no address for {to}: request_address first")
        message = pb.PeerMessage(
            message_id=message_id or new_message_id(),
            to=grant.user,
            body=body,
            sent_at_ms=int(time.time() * 1000),
        )
        # `from` is a Python keyword, so it is set through setattr.
        setattr(message, "from", self.username)
        try:
            send_peer_message(grant.host, grant.port, grant.public_key, self.listener.keys, message)
            return "DIRECT"
        except (OSError, PeerError):
            with self._grants_lock:
                self.grants.pop(to.lower(), None)
            response = self.send_message(to, body, message.message_id)
            return pb.DeliveryStatus.Name(response.status).removeprefix("DELIVERY_STATUS_")

    # -- internals ----------------------------------------------------------------------------

    def _hold(self, granted: Any) -> None:
        grant = Grant(granted.user, granted.host, granted.port, bytes(granted.public_key))
        with self._grants_lock:
            self.grants[grant.user.lower()] = grant

    def _on_event(self, event: Any) -> None:
        """Runs on the stream's thread before the event is queued: keeps grants and the
        listener's allowlist in step with the server."""
        kind = kind_of(event)
        if kind == "address_granted":
            self._hold(event.address_granted)
        elif kind == "address_revoked":
            user = event.address_revoked.user
            with self._grants_lock:
                self.grants.pop(user.lower(), None)
            if self.listener is not None:
                self.listener.forget_user(user)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval_s):
            try:
                self._call(self.chat.Heartbeat, pb.HeartbeatRequest(ack_seq=self.acked_seq))
            except grpc.RpcError:
                return  # the session is over; the stream says why


class EventStream:
    """The Subscribe stream, read on a background thread into a `Timeline` of `Event`s."""

    def __init__(self, call: Any, on_event: Callable[[Any], None]) -> None:
        self._call = call
        self._on_event = on_event
        self.events = Timeline(describe=_describe_event)
        self.error: Optional[grpc.RpcError] = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._call:
                self._on_event(event)
                self.events.push(event)
            self.events.close("the stream ended")
        except grpc.RpcError as e:
            self.error = e
            self.events.close(f"the stream failed: {e.code()} {e.details()}")

    def expect(
        self, kind: str, where: Callable[[Any], bool] = lambda _: True, within: float = PATIENCE
    ) -> Any:
        """Waits for the first event of `kind` (an `Event.kind` field name, e.g. "message")
        matching `where` on the inner message, and returns the inner message."""
        event = self.events.expect(
            f"a {kind} event", lambda e: kind_of(e) == kind and where(getattr(e, kind)), within
        )
        return getattr(event, kind)

    def expect_none_before(
        self,
        kind: str,
        where: Callable[[Any], bool],
        barrier_kind: str,
        barrier_where: Callable[[Any], bool],
    ) -> Any:
        """Fails if an event of `kind` matching `where` arrives before the barrier event."""
        event = self.events.expect_none_before(
            f"a {kind} event",
            lambda e: kind_of(e) == kind and where(getattr(e, kind)),
            f"a {barrier_kind} event",
            lambda e: kind_of(e) == barrier_kind and barrier_where(getattr(e, barrier_kind)),
        )
        return getattr(event, barrier_kind)

    def wait_closed(self, within: float = PATIENCE) -> None:
        self._thread.join(within)
        if self._thread.is_alive():
            raise AssertionError(f"the stream did not end within {within}s")

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(PATIENCE)


# ------------------------------------------------------------------------------------------------
# The direct peer path (see "The direct peer path" in proto/chat.proto)

NOISE_PROTOCOL = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
# -> e, es, s, ss with an empty payload: 32 (e) + 48 (encrypted s) + 16 (payload tag).
FIRST_HANDSHAKE_LEN = 96
# The first handshake message may carry a PeerHello of at most this many bytes (files).
MAX_HELLO = 32
# <- e, ee, se with an empty payload: 32 (e) + 16 (payload tag).
SECOND_HANDSHAKE_LEN = 48
MAX_FRAME = 65535
# The responder's deadline for the whole exchange.
PEER_DEADLINE = 5.0


def fingerprint(public_key: bytes) -> str:
    """The short form of a peer key that people compare out of band (`confab chat`'s
    `fingerprint`/`whoami`): the first 10 bytes of its SHA-256, in hex, in groups of 4."""
    digest = hashlib.sha256(public_key).hexdigest()[:20]
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


class PeerError(Exception):
    """A peer exchange failed; the message names the step."""


@dataclass(frozen=True)
class PeerKeys:
    """An X25519 static key pair: a fresh one per login."""

    private: bytes
    public: bytes

    @staticmethod
    def generate() -> "PeerKeys":
        key = X25519PrivateKey.generate()
        return PeerKeys(
            private=key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            ),
            public=key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            ),
        )


def _recv_exact(sock: socket.socket, n: int, deadline: float, step: str) -> bytes:
    chunks = []
    while n > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerError(f"{step}: timed out")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n)
        except socket.timeout:
            raise PeerError(f"{step}: timed out") from None
        if not chunk:
            raise PeerError(f"{step}: the connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, deadline: float, step: str, max_len: int = MAX_FRAME) -> bytes:
    """One frame: a 2-byte big-endian length N (1..=65535), then N bytes. A length over
    `max_len` is refused before reading the body."""
    (n,) = struct.unpack(">H", _recv_exact(sock, 2, deadline, step))
    if n == 0 or n > max_len:
        raise PeerError(f"{step}: bad frame length {n}")
    return _recv_exact(sock, n, deadline, step)


def write_frame(sock: socket.socket, payload: bytes) -> None:
    if not 1 <= len(payload) <= MAX_FRAME:
        raise PeerError(f"frame of {len(payload)} bytes cannot be sent")
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def send_peer_message(
    host: str,
    port: int,
    their_public_key: bytes,
    keys: PeerKeys,
    message: Any,
    timeout: float = PEER_DEADLINE,
) -> None:
    """The initiator: one connection, handshake, one PeerMessage, one PeerAck, close.

    Raises PeerError (or OSError) if the message was not acknowledged: the caller then resends it
    through the server with the same message_id.
    """
    deadline = time.monotonic() + timeout
    noise = NoiseConnection.from_name(NOISE_PROTOCOL)
    noise.set_as_initiator()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, keys.private)
    noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, their_public_key)
    noise.start_handshake()  # empty prologue, no PSK
    with socket.create_connection((host, port), timeout=timeout) as sock:
        write_frame(sock, noise.write_message())  # -> e, es, s, ss
        reply = read_frame(sock, deadline, "handshake reply", SECOND_HANDSHAKE_LEN)
        try:
            noise.read_message(reply)  # <- e, ee, se
        except Exception as e:  # noiseprotocol raises several kinds
            raise PeerError(f"handshake: {e}") from e
        write_frame(sock, noise.encrypt(message.SerializeToString()))
        try:
            ack = pb.PeerAck.FromString(noise.decrypt(read_frame(sock, deadline, "ack")))
        except PeerError:
            raise
        except Exception as e:
            raise PeerError(f"ack: {e}") from e
    if ack.message_id != message.message_id:
        raise PeerError(f"ack for {ack.message_id!r}, not {message.message_id!r}")


@dataclass
class Inbound:
    """A PeerMessage that arrived on the listener, with the user whose key sent it."""

    sender: str
    message: Any


class PeerListener:
    """The responder: accepts peer connections and allows only keys of accepted requests.

    Messages arrive in `inbound`, a `Timeline` of `Inbound`. `rejected` counts connections
    closed without a PeerAck (bad frames, unknown keys, invalid messages). A connection whose
    hello asks for a file goes to `on_file(conn, noise, sender)` when set (see confab_files),
    and is closed otherwise.
    """

    def __init__(self, keys: Optional[PeerKeys] = None, host: str = "127.0.0.1") -> None:
        self.keys = keys or PeerKeys.generate()
        self._allowed: dict[bytes, str] = {}  # static key → username it was granted to
        self._lock = threading.Lock()
        self.inbound = Timeline(
            describe=lambda i: f"{i.sender}: {i.message.message_id} {i.message.body!r}"
        )
        self.rejected: "queue.Queue[str]" = queue.Queue()
        self._sock = socket.create_server((host, 0))
        self.port: int = self._sock.getsockname()[1]
        self._slots = threading.BoundedSemaphore(64)
        self.on_file: Optional[Callable[[socket.socket, NoiseConnection, str], None]] = None
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def allow(self, public_key: bytes, user: str) -> None:
        with self._lock:
            self._allowed[bytes(public_key)] = user

    def forget_user(self, user: str) -> None:
        with self._lock:
            for key in [k for k, u in self._allowed.items() if u.lower() == user.lower()]:
                del self._allowed[key]

    def close(self) -> None:
        """Stops listening: new connections are refused."""
        # close() alone leaves the socket listening while accept() blocks on it in another
        # thread; shutdown() wakes that accept (Linux) and stops the listening at once.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(PATIENCE)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                conn.close()  # over the cap: closed at once
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._exchange(conn)
        except (PeerError, OSError) as e:
            self.rejected.put(str(e))
        finally:
            self._slots.release()

    def _exchange(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + PEER_DEADLINE
        first = read_frame(conn, deadline, "handshake", FIRST_HANDSHAKE_LEN + MAX_HELLO)
        if len(first) < FIRST_HANDSHAKE_LEN:
            raise PeerError(f"handshake: a first frame of {len(first)} bytes")
        noise = NoiseConnection.from_name(NOISE_PROTOCOL)
        noise.set_as_responder()
        noise.set_keypair_from_private_bytes(Keypair.STATIC, self.keys.private)
        noise.start_handshake()
        try:
            # -> e, es, s, ss: reveals the initiator's static key; the payload is the hello
            hello = pb.PeerHello.FromString(bytes(noise.read_message(first)))
        except Exception as e:
            raise PeerError(f"handshake: {e}") from e
        their_key = bytes(noise.noise_protocol.handshake_state.rs.public_bytes)
        with self._lock:
            sender = self._allowed.get(their_key)
        if sender is None:
            raise PeerError("handshake: a key we never accepted")
        if hello.exchange not in (pb.PEER_EXCHANGE_UNSPECIFIED, pb.PEER_EXCHANGE_FILE):
            raise PeerError(f"handshake: unknown exchange {hello.exchange}")
        if hello.exchange == pb.PEER_EXCHANGE_FILE and self.on_file is None:
            raise PeerError("handshake: this listener takes no files")
        write_frame(conn, noise.write_message())  # <- e, ee, se
        if hello.exchange == pb.PEER_EXCHANGE_FILE:
            assert self.on_file is not None
            self.on_file(conn, noise, sender)
            return
        try:
            message = pb.PeerMessage.FromString(
                noise.decrypt(read_frame(conn, deadline, "message"))
            )
        except PeerError:
            raise
        except Exception as e:
            raise PeerError(f"message: {e}") from e
        claimed = getattr(message, "from")
        if claimed.lower() != sender.lower():
            raise PeerError(f"message: from {claimed!r} on {sender}'s key")
        if not message.to or not 1 <= len(message.message_id.encode()) <= 64:
            raise PeerError("message: missing `to` or bad message_id")
        self.inbound.push(Inbound(sender, message))  # our user has it: now acknowledge
        write_frame(conn, noise.encrypt(pb.PeerAck(message_id=message.message_id).SerializeToString()))
