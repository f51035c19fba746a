//! Events as the server sends them, encoded once into shared bytes, and the translation of the
//! core's domain values into their protobuf form. With `rpc/`, the only server code that knows
//! protobuf.
//!
//! The generated server code treats `confab.v1.Event` as [`EncodedEvent`] (see `build.rs`), so a
//! broadcast to 10 000 streams encodes the event once and every stream writes the same
//! reference-counted bytes. It encodes with [`ServerCodec`], tonic's prost codec with a smaller
//! first buffer.

use std::marker::PhantomData;

use bytes::Bytes;
use prost::Message;

use super::{
    consent::{Denial, Grant},
    decode::RequestDecoder,
    domain::{Delivery, EndReason, OnlineUser},
    raw::Raw,
};
use crate::pb::{self, event::Kind};

/// A protobuf-encoded `confab.v1.Event`.
pub type EncodedEvent = Raw<pb::Event>;

/// Initial size of a response stream's encode buffer. tonic's default (8 KiB) is allocated per
/// stream and held while it is open; events are a few hundred bytes, and the buffer grows when a
/// large one comes along.
const ENCODE_BUFFER: usize = 1024;
/// tonic's default: flush to the connection after this much encoded data.
const YIELD_THRESHOLD: usize = 32 * 1024;
/// Initial size of a request decode buffer (tonic's default).
const DECODE_BUFFER: usize = 8 * 1024;

/// The server's codec: prost, with a 1 KiB first encode buffer, and requests that fail to
/// decode answered `INVALID_ARGUMENT` ([`RequestDecoder`]).
#[derive(Debug)]
pub struct ServerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        ServerCodec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(tonic::codec::BufferSettings::new(
            ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder::new(tonic::codec::BufferSettings::new(
            DECODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }
}

/// Encodes one event.
pub fn encode(kind: Kind) -> EncodedEvent {
    EncodedEvent::new(Bytes::from(pb::Event { kind: Some(kind) }.encode_to_vec()))
}

/// A direct message event.
pub fn direct(seq: u64, from: &str, body: &str, message_id: &str, sent_at_ms: i64) -> EncodedEvent {
    encode(Kind::Message(pb::DirectMessage {
        seq,
        from: from.to_owned(),
        body: body.to_owned(),
        message_id: message_id.to_owned(),
        sent_at_ms,
    }))
}

/// A presence change of `user`.
pub fn presence(user: &str, online: bool) -> EncodedEvent {
    let presence = if online {
        pb::Presence::Online
    } else {
        pb::Presence::Offline
    };
    encode(Kind::Presence(pb::PresenceChanged {
        user: user.to_owned(),
        presence: presence as i32,
    }))
}

/// Most changes in one `PresenceBatch`: a client's default decode limit (4 MiB) is far away.
pub const PRESENCE_BATCH_MAX: usize = 1024;

/// `events` (each a `presence` event from [`presence`]) as `presence_batch` events of at most
/// [`PRESENCE_BATCH_MAX`] changes each, oldest first.
///
/// `PresenceBatch.changes` has the field number of `Event.presence`, so an encoded presence event
/// is also an encoded batch entry: a batch is its entries' bytes side by side, with no decoding.
pub fn presence_batches(events: &[EncodedEvent]) -> Vec<EncodedEvent> {
    /// `Event.presence_batch`: field 11, length-delimited.
    const TAG: u8 = (11 << 3) | 2;
    events
        .chunks(PRESENCE_BATCH_MAX)
        .map(|chunk| {
            let len: usize = chunk.iter().map(|e| e.bytes().len()).sum();
            let mut buf =
                Vec::with_capacity(1 + prost::encoding::encoded_len_varint(len as u64) + len);
            buf.push(TAG);
            prost::encoding::encode_varint(len as u64, &mut buf);
            for e in chunk {
                buf.extend_from_slice(e.bytes());
            }
            EncodedEvent::new(Bytes::from(buf))
        })
        .collect()
}

/// The end of a session.
pub fn session_ended(reason: EndReason) -> EncodedEvent {
    encode(Kind::SessionEnded(pb::SessionEnded {
        reason: end_reason(reason) as i32,
    }))
}

/// The proto's name for why a session ended.
pub fn end_reason(reason: EndReason) -> pb::SessionEndReason {
    match reason {
        EndReason::LoggedOut => pb::SessionEndReason::LoggedOut,
        EndReason::LoggedInElsewhere => pb::SessionEndReason::LoggedInElsewhere,
        EndReason::TimedOut => pb::SessionEndReason::TimedOut,
        EndReason::Kicked => pb::SessionEndReason::Kicked,
        EndReason::TooSlow => pb::SessionEndReason::TooSlow,
        EndReason::ServerShutdown => pb::SessionEndReason::ServerShutdown,
    }
}

/// Failed logins for the live session's user, from `source`.
pub fn login_failed(failures: u32, locked_until_ms: i64, source: std::net::IpAddr) -> EncodedEvent {
    encode(Kind::LoginFailed(pb::LoginFailed {
        failed_attempts: failures,
        locked_until_ms,
        source: source.to_string(),
    }))
}

/// A broadcast from `from`.
pub fn broadcast(from: &str, body: String, sent_at_ms: i64) -> EncodedEvent {
    encode(Kind::Broadcast(pb::BroadcastMessage {
        from: from.to_owned(),
        body,
        sent_at_ms,
    }))
}

/// `from` asks for the address (request `id`).
pub fn address_requested(
    request_id: String,
    from: &str,
    from_public_key: Vec<u8>,
    expires_at_ms: i64,
) -> EncodedEvent {
    encode(Kind::AddressRequested(pb::AddressRequested {
        request_id,
        from: from.to_owned(),
        from_public_key,
        expires_at_ms,
    }))
}

/// A grant as the proto carries it.
pub fn grant(grant: &Grant) -> pb::AddressGranted {
    pb::AddressGranted {
        user: grant.user.to_string(),
        host: grant.address.host.clone(),
        port: u32::from(grant.address.port),
        public_key: grant.address.public_key.clone(),
    }
}

/// The requester may dial the granted address.
pub fn address_granted(g: &Grant) -> EncodedEvent {
    encode(Kind::AddressGranted(grant(g)))
}

/// A grant with `user` is over.
pub fn address_revoked(user: &str) -> EncodedEvent {
    encode(Kind::AddressRevoked(pb::AddressRevoked {
        user: user.to_owned(),
    }))
}

/// `user` did not grant the address.
pub fn address_denied(user: &str, why: Denial) -> EncodedEvent {
    let reason = match why {
        Denial::Declined => pb::DenyReason::Declined,
        Denial::Timeout => pb::DenyReason::Timeout,
        Denial::Offline => pb::DenyReason::Offline,
    };
    encode(Kind::AddressDenied(pb::AddressDenied {
        user: user.to_owned(),
        reason: reason as i32,
    }))
}

/// `DELIVERED` or `STORED`.
pub fn delivery(delivery: Delivery) -> pb::DeliveryStatus {
    match delivery {
        Delivery::Delivered => pb::DeliveryStatus::Delivered,
        Delivery::Stored => pb::DeliveryStatus::Stored,
    }
}

/// A row of `ListOnline`.
pub fn online_user(user: OnlineUser) -> pb::OnlineUser {
    pb::OnlineUser {
        username: user.name,
        online: user.online,
        last_login_ms: user.last_login_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_events_decode_as_events() {
        let e = direct(7, "alice", "hi", "m1", 5);
        let mut framed = Vec::new();
        e.encode(&mut framed).unwrap();
        let back = pb::Event::decode(framed.as_slice()).unwrap();
        match back.kind {
            Some(Kind::Message(m)) => assert_eq!((m.seq, m.from.as_str()), (7, "alice")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!format!("{e:?}").contains("hi"));
    }

    #[test]
    fn presence_events_side_by_side_decode_as_batches_in_order() {
        let events: Vec<_> = (0..PRESENCE_BATCH_MAX + 2)
            .map(|n| presence(&format!("user{n}"), n % 2 == 0))
            .collect();
        let batches = presence_batches(&events);
        assert_eq!(batches.len(), 2);
        let mut seen = Vec::new();
        for batch in &batches {
            match pb::Event::decode(batch.bytes().as_ref()).unwrap().kind {
                Some(Kind::PresenceBatch(b)) => seen.extend(b.changes),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen.len(), PRESENCE_BATCH_MAX + 2);
        assert_eq!(seen[0].user, "user0");
        assert_eq!(seen[0].presence(), pb::Presence::Online);
        assert_eq!(
            seen[PRESENCE_BATCH_MAX + 1].user,
            format!("user{}", PRESENCE_BATCH_MAX + 1)
        );
        assert_eq!(
            seen[PRESENCE_BATCH_MAX + 1].presence(),
            pb::Presence::Offline
        );
        assert!(presence_batches(&[]).is_empty());
    }
}
