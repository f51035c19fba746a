"""The Python client against a real `confab serve`: the control plane from generated stubs."""

from __future__ import annotations

from typing import Callable

import grpc
import pytest

from confab_client import Client, Session, pb, pb_grpc, rpc_error_details
from conftest import PASSWORD
from harness import ServerProcess


def code_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_register_login_subscribe(server: ServerProcess) -> None:
    client = Client(server.address)
    try:
        assert client.register("Alice", PASSWORD) == "Alice"
        # Unique ignoring case.
        assert code_of(lambda: client.register("alice", PASSWORD)).code() == (
            grpc.StatusCode.ALREADY_EXISTS
        )
        wrong = code_of(lambda: client.login("alice", "not the password"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "attempts left" in wrong.details()

        session = client.login("alice", PASSWORD)
        assert session.username == "Alice"  # the canonical spelling
        assert session.heartbeat_interval_s == 1.0
        stream = session.subscribe()
        assert stream.expect("backlog_end").last_seq == 0

        # Chat calls need the bearer token.
        chat = pb_grpc.ChatStub(client.channel)
        for metadata in [(), (("authorization", "Bearer not-a-token"),)]:
            error = code_of(lambda: chat.ListOnline(pb.ListOnlineRequest(), metadata=metadata))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED

        session.logout()
        ended = stream.expect("session_ended")
        assert ended.reason == pb.SESSION_END_REASON_LOGGED_OUT
        stream.wait_closed()
        assert code_of(session.list_blocked).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        client.close()


def test_direct_messages_both_ways_are_replayed_until_acknowledged(
    login: Callable[..., Session],
) -> None:
    alice, bob = login("alice"), login("bob")

    sent = alice.send_message("bob", "hello bob", "m-1")
    assert sent.status == pb.DELIVERY_STATUS_DELIVERED and not sent.duplicate
    got = bob.events.expect("message", lambda m: m.message_id == "m-1")
    assert (getattr(got, "from"), got.body, got.seq) == ("alice", "hello bob", sent.seq)

    # Unacknowledged: a new Subscribe replays it, then says where the backlog ends.
    replayed = bob.subscribe(resume_after=0)
    assert replayed.expect("message").message_id == "m-1"
    assert replayed.expect("backlog_end").last_seq == sent.seq

    # A resend with the same id while it is in the inbox is not stored twice.
    assert alice.send_message("bob", "hello bob", "m-1").duplicate

    # Acknowledged with Heartbeat(ack_seq): gone from the inbox, nothing to replay.
    bob.ack(got.seq)
    again = bob.subscribe(resume_after=0)
    again.expect_none_before("message", lambda _: True, "backlog_end", lambda _: True)

    # And the other way.
    reply = bob.send_message("alice", "hi alice", "m-2")
    assert reply.status == pb.DELIVERY_STATUS_DELIVERED
    got = alice.events.expect("message", lambda m: m.message_id == "m-2")
    assert (getattr(got, "from"), got.body) == ("bob", "hi alice")
    alice.ack(got.seq)

    # Offline: stored, then replayed at the next login's Subscribe.
    bob.logout()
    stored = alice.send_message("bob", "while you were away", "m-3")
    assert stored.status == pb.DELIVERY_STATUS_STORED
    bob_again = login("bob", register=False)
    # login() waited for BacklogEnd; the replayed message came before it and is still unclaimed.
    assert bob_again.events.expect("message", lambda m: m.message_id == "m-3").body == (
        "while you were away"
    )


def test_message_errors(login: Callable[..., Session]) -> None:
    alice = login("alice")
    login("bob")
    assert code_of(lambda: alice.send_message("nobody", "x")).code() == grpc.StatusCode.NOT_FOUND
    to_self = code_of(lambda: alice.send_message("alice", "x"))
    assert to_self.code() == grpc.StatusCode.INVALID_ARGUMENT
    too_long = code_of(lambda: alice.send_message("bob", "x" * (alice.max_message_bytes + 1)))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rpc_error_details(too_long)
    assert [f for f, _ in details.violations] == ["body"], details


def test_lockout_carries_retry_info(server: ServerProcess, login: Callable[..., Session]) -> None:
    alice = login("alice")
    intruder = Client(server.address)
    try:
        for attempt in [1, 2]:
            wrong = code_of(lambda: intruder.login("alice", "wrong password"))
            assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
            assert f"{3 - attempt} attempts left" in wrong.details()
            assert alice.events.expect("login_failed").failed_attempts == attempt
        # The failure that uses up the last attempt is already refused as a lockout.
        third = code_of(lambda: intruder.login("alice", "wrong password"))
        assert third.code() == grpc.StatusCode.PERMISSION_DENIED
        failed = alice.events.expect("login_failed")
        assert failed.failed_attempts == 3 and failed.locked_until_ms > 0
        # Locked: even the right password is refused, with RetryInfo saying for how long.
        locked = code_of(lambda: intruder.login("alice", PASSWORD))
        assert locked.code() == grpc.StatusCode.PERMISSION_DENIED
        retry = rpc_error_details(locked).retry_after_s
        assert retry is not None and 0 < retry <= 60, retry
        # The lockout did not end the live session.
        assert alice.list_online() == []
    finally:
        intruder.close()


def test_presence_and_online(login: Callable[..., Session]) -> None:
    alice = login("alice")
    bob = login("bob")
    online = alice.events.expect("presence", lambda p: p.user == "bob")
    assert online.presence == pb.PRESENCE_ONLINE
    assert alice.list_online() == ["bob"]
    assert bob.list_online() == ["alice"]
    bob.logout()
    offline = alice.events.expect("presence", lambda p: p.user == "bob")
    assert offline.presence == pb.PRESENCE_OFFLINE
    assert alice.list_online() == []
    assert alice.list_online(since_seconds=3600) == ["bob"]


def test_presence_batches(login: Callable[..., Session]) -> None:
    # The server builds batches from encoded `presence` events without decoding them: this is
    # the check that another language's stubs read them as the proto says.
    alice = login("alice")
    alice.subscribe(presence_batches=True).expect("backlog_end")
    bob = login("bob")
    batch = alice.events.expect("presence_batch", lambda b: len(b.changes) > 0)
    assert [(c.user, c.presence) for c in batch.changes] == [("bob", pb.PRESENCE_ONLINE)]
    bob.logout()
    batch = alice.events.expect("presence_batch", lambda b: len(b.changes) > 0)
    assert [(c.user, c.presence) for c in batch.changes] == [("bob", pb.PRESENCE_OFFLINE)]


def test_block_and_unblock(login: Callable[..., Session]) -> None:
    alice, bob, carol = login("alice"), login("bob"), login("carol")
    alice.block("bob")
    assert alice.list_blocked() == ["bob"]
    alice.block("bob")  # idempotent
    denied = code_of(lambda: bob.send_message("alice", "let me in"))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "blocked" in denied.details()
    assert code_of(lambda: bob.request_address("alice")).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert "alice" not in bob.list_online()
    # The blocker can still write to the blocked user.
    assert alice.send_message("bob", "you cannot answer").status == pb.DELIVERY_STATUS_DELIVERED

    # Bob does not see alice's presence: she logs out, then carol's message is the barrier.
    alice.logout()
    carol.send_message("bob", "barrier", "barrier-1")
    bob.events.expect_none_before(
        "presence",
        lambda p: p.user == "alice",
        "message",
        lambda m: m.message_id == "barrier-1",
    )

    alice = login("alice", register=False)
    alice.unblock("bob")
    alice.unblock("bob")  # idempotent
    assert alice.list_blocked() == []
    assert bob.send_message("alice", "thanks").status == pb.DELIVERY_STATUS_DELIVERED
    assert alice.events.expect("message", lambda m: m.body == "thanks")
    assert code_of(lambda: alice.block("nobody")).code() == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: alice.block("alice")).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_admin_sees_sessions(server: ServerProcess, login: Callable[..., Session]) -> None:
    login("alice")
    client = Client(server.address)
    try:
        admin = pb_grpc.AdminStub(client.channel)
        metadata = (("authorization", f"Bearer {server.admin_token()}"),)
        sessions = admin.ListSessions(pb.ListSessionsRequest(), metadata=metadata).sessions
        assert [(s.username, s.subscribed) for s in sessions] == [("alice", True)]
    finally:
        client.close()


def test_send_stream_answers_each_message_in_order(login: Callable[..., Session]) -> None:
    alice, bob = login("alice"), login("bob")
    requests = [
        pb.SendStreamRequest(message=pb.SendMessageRequest(to=to, body=body, message_id=mid))
        for to, body, mid in [("bob", "one", "s-1"), ("nobody", "lost", "s-2"), ("bob", "two", "s-3")]
    ]
    responses = list(alice.chat.SendStream(iter(requests), metadata=alice.metadata, timeout=10))
    assert [(r.message_id, r.code) for r in responses] == [
        ("s-1", grpc.StatusCode.OK.value[0]),
        ("s-2", grpc.StatusCode.NOT_FOUND.value[0]),
        ("s-3", grpc.StatusCode.OK.value[0]),
    ]
    assert "nobody" in responses[1].error
    assert responses[0].status == pb.DELIVERY_STATUS_DELIVERED
    assert bob.events.expect("message", lambda m: m.message_id == "s-1").body == "one"
    assert bob.events.expect("message", lambda m: m.message_id == "s-3").body == "two"
