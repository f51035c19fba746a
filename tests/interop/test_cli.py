"""The Python client and a real `confab chat --json` user on the same real server: direct
messages, presence, blocks, the address handshake both ways and private messages over the peer
path in both directions (Python's Noise against the Rust client's)."""

from __future__ import annotations

from typing import Callable

import grpc
import pytest

from confab_client import Client, Session, fingerprint, pb
from conftest import PASSWORD
from harness import ChatProcess, ServerProcess


def test_direct_messages_and_presence_with_the_cli(
    server: ServerProcess,
    login: Callable[..., Session],
    chat: Callable[[str], ChatProcess],
) -> None:
    py = login("py")
    cli = chat("cli")
    assert py.events.expect("presence", lambda p: p.user == "cli").presence == pb.PRESENCE_ONLINE
    cli.send("online")
    assert [u["user"] for u in cli.expect("online")["users"]] == ["py"]

    # Python → CLI, through the server.
    sent = py.send_message("cli", "hello from python", "py-1")
    assert sent.status == pb.DELIVERY_STATUS_DELIVERED
    shown = cli.expect("message", lambda m: m["message_id"] == "py-1")
    assert (shown["from"], shown["body"], shown["via"], shown["seq"]) == (
        "py", "hello from python", "server", sent.seq
    )

    # CLI → Python; Python acknowledges with Heartbeat(ack_seq).
    cli.send("message py hello from the cli")
    result = cli.expect("sent", lambda s: s["to"] == "py")
    assert (result["status"], result["via"]) == ("DELIVERED", "server")
    got = py.events.expect("message", lambda m: getattr(m, "from") == "cli")
    assert (got.body, got.message_id, got.seq) == (
        "hello from the cli", result["message_id"], result["seq"]
    )
    py.ack(got.seq)

    # The CLI logs out: Python sees it go offline, and it exits 0.
    cli.send("logout")
    cli.expect("logged_out")
    assert cli.finish() == 0
    assert py.events.expect("presence", lambda p: p.user == "cli").presence == (
        pb.PRESENCE_OFFLINE
    )
    # The CLI acknowledged what it showed: logging in as cli finds an empty inbox.
    client = Client(server.address)
    try:
        as_cli = client.login("cli", PASSWORD)
        replay = as_cli.subscribe(resume_after=0)
        replay.expect_none_before("message", lambda _: True, "backlog_end", lambda _: True)
        as_cli.logout()
    finally:
        client.close()
    # Python acknowledged too: its replay is empty.
    py.subscribe(resume_after=0).expect_none_before(
        "message", lambda _: True, "backlog_end", lambda _: True
    )


def test_blocks_with_the_cli(
    login: Callable[..., Session], chat: Callable[[str], ChatProcess]
) -> None:
    py = login("py")
    cli = chat("cli")

    # The CLI blocks Python: Python can neither message it nor ask for its address.
    cli.send("block py")
    cli.expect("blocked", lambda b: b["user"] == "py")
    with pytest.raises(grpc.RpcError) as denied:
        py.send_message("cli", "let me in")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cli has blocked you" in denied.value.details()
    with pytest.raises(grpc.RpcError) as denied:
        py.request_address("cli")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cli" not in py.list_online()
    cli.send("unblock py")
    cli.expect("unblocked", lambda b: b["user"] == "py")
    py.send_message("cli", "thanks", "py-2")
    assert cli.expect("message", lambda m: m["message_id"] == "py-2")["body"] == "thanks"

    # Python blocks the CLI: the CLI is refused with the server's code and sentence.
    py.block("cli")
    cli.send("message py are you there")
    refused = cli.expect("error", lambda e: e["code"] == "PERMISSION_DENIED")
    assert "py has blocked you" in refused["error"]
    py.unblock("cli")
    cli.send("message py now?")
    assert cli.expect("sent", lambda s: s["to"] == "py")["status"] == "DELIVERED"
    assert py.events.expect("message", lambda m: getattr(m, "from") == "cli").body == "now?"


def test_address_handshake_and_private_messages_with_the_cli(
    login: Callable[..., Session], chat: Callable[[str], ChatProcess]
) -> None:
    py = login("py")
    cli = chat("cli")

    # Python asks for the CLI's address; the CLI user accepts.
    asked = py.request_address("cli")
    prompt = cli.expect("address_request", lambda r: r["from"] == "py")
    assert prompt["request_id"] == asked.request_id
    assert prompt["fingerprint"] == fingerprint(py.peer.keys.public)
    cli.send("accept py")
    assert cli.expect("answered", lambda a: a["user"] == "py")["accept"] is True
    granted = py.events.expect("address_granted", lambda g: g.user == "cli")
    cli.send("whoami")
    me = cli.expect("whoami")
    assert (granted.host, granted.port) == ("127.0.0.1", me["peer_port"])
    assert fingerprint(granted.public_key) == me["fingerprint"]

    # Python → CLI over the peer path: Python's Noise initiator, the Rust responder.
    assert py.send_private("cli", "straight to you", "pp-1") == "DIRECT"
    shown = cli.expect("message", lambda m: m["message_id"] == "pp-1")
    assert (shown["from"], shown["body"], shown["via"]) == ("py", "straight to you", "direct")

    # The same message_id again through the server (as a fallback would): shown only once.
    py.send_message("cli", "straight to you", "pp-1")
    py.send_message("cli", "barrier", "pp-barrier")
    cli.expect_none_before(
        "message",
        lambda m: m["message_id"] == "pp-1",
        "message",
        lambda m: m["message_id"] == "pp-barrier",
    )

    # The CLI asks for Python's address; Python accepts (allowing the CLI's key on its listener).
    cli.send("getaddress py")
    cli.expect("address_request_sent", lambda r: r["user"] == "py")
    request = py.events.expect("address_requested", lambda r: getattr(r, "from") == "cli")
    assert fingerprint(request.from_public_key) == me["fingerprint"]
    py.respond(request, accept=True)
    grant = cli.expect("address_granted", lambda g: g["user"] == "py")
    assert (grant["host"], grant["port"]) == ("127.0.0.1", py.peer.port)
    assert grant["fingerprint"] == fingerprint(py.peer.keys.public)

    # CLI → Python over the peer path: the Rust initiator, Python's Noise responder.
    cli.send("private py straight back")
    sent = cli.expect("sent", lambda s: s["to"] == "py")
    assert (sent["status"], sent["via"], sent.get("fallback")) == ("DIRECT", "direct", None)
    got = py.peer.inbound.expect("the CLI's private message", lambda i: True)
    assert (got.sender, getattr(got.message, "from"), got.message.to, got.message.body) == (
        "cli", "cli", "py", "straight back"
    )
    assert got.message.message_id == sent["message_id"]

    # Python's listener goes away: the CLI falls back to the server with the same message_id.
    py.peer.close()
    cli.send("private py are you still there")
    fallback = cli.expect("sent", lambda s: s["to"] == "py")
    assert (fallback["status"], fallback["via"]) == ("DELIVERED", "server"), fallback
    assert fallback.get("fallback"), fallback
    relayed = py.events.expect("message", lambda m: m.message_id == fallback["message_id"])
    assert relayed.body == "are you still there"
