"""Files over the peer path in Python, written from the "Files over the peer path" section of
proto/chat.proto: `send_file` (the initiator) and `FileReceiver` (plugged into a
`PeerListener` as its `on_file`).

Both keep the whole file in memory: they exist to prove the protocol, not to move big files.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from typing import Any

from noise.connection import Keypair, NoiseConnection

from confab_client import (
    NOISE_PROTOCOL,
    PATIENCE,
    SECOND_HANDSHAKE_LEN,
    PeerError,
    PeerKeys,
    Timeline,
    pb,
    read_frame,
    write_frame,
)

# The largest FilePart.chunk: 65519 bytes of plaintext less 4 bytes of protobuf field header.
MAX_CHUNK = 65515
# The hello of a file transfer: PeerHello{exchange: PEER_EXCHANGE_FILE}.
FILE_HELLO = pb.PeerHello(exchange=pb.PEER_EXCHANGE_FILE).SerializeToString()
# The receiver may take up to 120 s to answer.
ANSWER_WAIT = 130.0


def _decrypt(noise: NoiseConnection, sock: socket.socket, deadline: float, step: str) -> bytes:
    try:
        return bytes(noise.decrypt(read_frame(sock, deadline, step)))
    except PeerError:
        raise
    except Exception as e:  # noiseprotocol raises several kinds
        raise PeerError(f"{step}: {e}") from e


def send_file(
    host: str,
    port: int,
    their_public_key: bytes,
    keys: PeerKeys,
    sender: str,
    to: str,
    name: str,
    data: bytes,
    transfer_id: str,
    answer_within: float = PATIENCE,
) -> tuple[Any, Any]:
    """Offers `data` as `name`; once accepted, sends it from the answer's offset, then its
    SHA-256, and returns (FileAnswer, FileAck). Raises PeerError if the offer is not accepted
    (the answer is in the message) or no ack comes."""
    noise = NoiseConnection.from_name(NOISE_PROTOCOL)
    noise.set_as_initiator()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, keys.private)
    noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, their_public_key)
    noise.start_handshake()
    with socket.create_connection((host, port), timeout=PATIENCE) as sock:
        deadline = time.monotonic() + PATIENCE
        write_frame(sock, noise.write_message(FILE_HELLO))  # -> e, es, s, ss + hello
        reply = read_frame(sock, deadline, "handshake reply", SECOND_HANDSHAKE_LEN)
        try:
            noise.read_message(reply)  # <- e, ee, se
        except Exception as e:
            raise PeerError(f"handshake: {e}") from e
        offer = pb.FileOffer(
            transfer_id=transfer_id, to=to, name=name, size=len(data),
            sent_at_ms=int(time.time() * 1000),
        )
        setattr(offer, "from", sender)  # `from` is a Python keyword
        write_frame(sock, noise.encrypt(offer.SerializeToString()))
        answer = pb.FileAnswer.FromString(
            _decrypt(noise, sock, time.monotonic() + answer_within, "answer")
        )
        if answer.decision != pb.FILE_DECISION_ACCEPTED:
            raise PeerError(
                f"{pb.FileDecision.Name(answer.decision)}: {answer.reason}"
            )
        if answer.offset > len(data):
            raise PeerError(f"asked to start at {answer.offset} of {len(data)}")
        for start in range(answer.offset, len(data), MAX_CHUNK):
            part = pb.FilePart(chunk=data[start : start + MAX_CHUNK])
            write_frame(sock, noise.encrypt(part.SerializeToString()))
        digest = hashlib.sha256(data).digest()
        write_frame(sock, noise.encrypt(pb.FilePart(sha256=digest).SerializeToString()))
        ack = pb.FileAck.FromString(_decrypt(noise, sock, time.monotonic() + PATIENCE, "ack"))
    if ack.transfer_id != transfer_id or ack.sha256 != digest:
        raise PeerError(f"an ack for another transfer: {ack}")
    return answer, ack


@dataclass
class ReceivedFile:
    sender: str
    offer: Any
    data: bytes


class FileReceiver:
    """Takes every file offered on a `PeerListener` (set as its `on_file`) into memory, up to
    `max_bytes`; finished files arrive in `files`, a Timeline of ReceivedFile."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self.files = Timeline(describe=lambda f: f"{f.sender}: {f.offer.name} ({len(f.data)} B)")

    def __call__(self, conn: socket.socket, noise: NoiseConnection, sender: str) -> None:
        def send(message: Any) -> None:
            write_frame(conn, noise.encrypt(message.SerializeToString()))

        offer = pb.FileOffer.FromString(_decrypt(noise, conn, time.monotonic() + PATIENCE, "offer"))
        if getattr(offer, "from").lower() != sender.lower() or not offer.to:
            send(pb.FileAnswer(decision=pb.FILE_DECISION_INVALID, reason="bad offer"))
            return
        if offer.size > self.max_bytes:
            send(pb.FileAnswer(decision=pb.FILE_DECISION_TOO_LARGE, reason="too large"))
            return
        send(pb.FileAnswer(decision=pb.FILE_DECISION_ACCEPTED, offset=0))
        received = bytearray()
        while True:
            part = pb.FilePart.FromString(
                _decrypt(noise, conn, time.monotonic() + PATIENCE, "file part")
            )
            if part.WhichOneof("part") == "chunk":
                if len(received) + len(part.chunk) > offer.size:
                    raise PeerError("more than offered")
                received += part.chunk
                continue
            if part.WhichOneof("part") != "sha256" or len(received) != offer.size:
                raise PeerError("ended early or broke the protocol")
            if hashlib.sha256(received).digest() != part.sha256:
                raise PeerError("checksum mismatch")
            send(pb.FileAck(transfer_id=offer.transfer_id, sha256=part.sha256))
            self.files.push(ReceivedFile(sender, offer, bytes(received)))
            return


def receive_files(listener: Any, max_bytes: int = 64 << 20) -> FileReceiver:
    """Makes `listener` take files; returns the receiver whose `files` to watch."""
    receiver = FileReceiver(max_bytes)
    listener.on_file = receiver
    return receiver
