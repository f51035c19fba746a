"""The address/consent handshake and the peer path between two Python clients, through a real
server: Noise IK written in Python from the proto's comments, on both ends."""

from __future__ import annotations

import socket
import struct
from typing import Callable

import grpc
import pytest

from confab_client import (
    FIRST_HANDSHAKE_LEN,
    PEER_DEADLINE,
    PeerError,
    PeerKeys,
    Session,
    pb,
    send_peer_message,
)


def grant(requester: Session, target: Session) -> None:
    """`requester` asks for `target`'s address and `target` accepts."""
    response = requester.request_address(target.username)
    assert response.request_id
    asked = target.events.expect("address_requested", lambda r: r.request_id == response.request_id)
    assert getattr(asked, "from") == requester.username
    assert asked.from_public_key == requester.peer.keys.public
    target.respond(asked, accept=True)
    granted = requester.events.expect("address_granted", lambda g: g.user == target.username)
    assert (granted.host, granted.port) == ("127.0.0.1", target.peer.port)
    assert granted.public_key == target.peer.keys.public


def test_private_messages_both_ways(login: Callable[..., Session]) -> None:
    alice, bob = login("alice"), login("bob")
    grant(alice, bob)
    # A repeat while the grant is valid returns it at once, without asking again.
    assert alice.request_address("bob").HasField("grant")

    assert alice.send_private("bob", "psst", "p-1") == "DIRECT"
    got = bob.peer.inbound.expect("alice's private message", lambda i: True)
    assert (got.sender, got.message.message_id, got.message.body) == ("alice", "p-1", "psst")
    assert (getattr(got.message, "from"), got.message.to) == ("alice", "bob")

    # Bob may not send back on alice's grant alone: he needs hers.
    assert bob.grant_for("alice") is None
    grant(bob, alice)
    assert bob.send_private("alice", "psst back", "p-2") == "DIRECT"
    got = alice.peer.inbound.expect("bob's private message", lambda i: True)
    assert (got.sender, got.message.body) == ("bob", "psst back")


def test_private_falls_back_to_the_server_with_the_same_id(login: Callable[..., Session]) -> None:
    alice, bob = login("alice"), login("bob")
    grant(alice, bob)
    bob.peer.close()  # bob's client can no longer be reached directly
    assert alice.send_private("bob", "via the server", "p-3") == "DELIVERED"
    got = bob.events.expect("message", lambda m: m.message_id == "p-3")
    assert got.body == "via the server"
    assert alice.grant_for("bob") is None  # the address that failed was dropped


def test_declined_request_and_revocation(login: Callable[..., Session]) -> None:
    alice, bob, carol = login("alice"), login("bob"), login("carol")
    response = carol.request_address("bob")
    asked = bob.events.expect("address_requested", lambda r: getattr(r, "from") == "carol")
    bob.respond(asked, accept=False)
    denied = carol.events.expect("address_denied", lambda d: d.user == "bob")
    assert denied.reason == pb.DENY_REASON_DECLINED
    with pytest.raises(grpc.RpcError) as cooldown:
        carol.request_address("bob")
    assert cooldown.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert response.request_id

    grant(alice, bob)
    bob.block("alice")  # revokes the grant: both sides are told
    assert alice.events.expect("address_revoked").user == "bob"
    assert bob.events.expect("address_revoked").user == "alice"
    assert alice.grant_for("bob") is None
    # Bob's listener forgot alice's key: a direct send with the old address is refused.
    with pytest.raises((PeerError, OSError)):
        message = pb.PeerMessage(message_id="p-4", to="bob", body="still there?")
        setattr(message, "from", "alice")
        send_peer_message("127.0.0.1", bob.peer.port, bob.peer.keys.public,
                          alice.peer.keys, message)
    bob.peer.rejected.get(timeout=PEER_DEADLINE)


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PEER_DEADLINE * 2)
    return sock


def _closed_without_reply(sock: socket.socket) -> bool:
    """True when the peer closes the connection without sending anything."""
    with sock:
        return sock.recv(1) == b""


def test_listener_refuses_bad_peers(login: Callable[..., Session]) -> None:
    alice, bob = login("alice"), login("bob")
    grant(alice, bob)
    port = bob.peer.port

    # A key bob never accepted: closed without a handshake reply.
    stranger = PeerKeys.generate()
    message = pb.PeerMessage(message_id="x-1", to="bob", body="hi")
    setattr(message, "from", "alice")
    with pytest.raises(PeerError):
        send_peer_message("127.0.0.1", port, bob.peer.keys.public, stranger, message)
    assert "never accepted" in bob.peer.rejected.get(timeout=PEER_DEADLINE)

    # alice's key, but claiming to be somebody else: no PeerAck.
    message = pb.PeerMessage(message_id="x-2", to="bob", body="hi")
    setattr(message, "from", "mallory")
    with pytest.raises(PeerError):
        send_peer_message("127.0.0.1", port, bob.peer.keys.public, alice.peer.keys, message)
    assert "mallory" in bob.peer.rejected.get(timeout=PEER_DEADLINE)

    # A first frame of the wrong length, garbage of the right length, an oversize length.
    for frame in [
        struct.pack(">H", 10) + b"0123456789",
        struct.pack(">H", FIRST_HANDSHAKE_LEN) + bytes(FIRST_HANDSHAKE_LEN),
        struct.pack(">H", 65535),
    ]:
        sock = _raw(port)
        sock.sendall(frame)
        assert _closed_without_reply(sock)
        bob.peer.rejected.get(timeout=PEER_DEADLINE)

    # Nothing of it reached bob, and the listener still works.
    assert alice.send_private("bob", "still fine", "x-3") == "DIRECT"
    got = bob.peer.inbound.expect("alice's message", lambda i: True)
    assert got.message.message_id == "x-3"
    assert bob.peer.inbound.pending() == []
