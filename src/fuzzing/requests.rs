//! The server's request decoding on arbitrary bytes, for every request type of the three
//! services: what any client that reaches the gRPC port can send.

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use crate::pb;
use crate::server::decode::SendStreamItem;
use crate::server::error::Error;

/// Decodes `data[1..]` as the request type `data[0]` picks (modulo their number), as the server
/// does. Invariants: no panic; bytes that do not decode are answered `INVALID_ARGUMENT`, with a
/// `BadRequest` naming one field (or none: the request as a whole); bytes that do decode are a
/// request that encodes and decodes back to itself.
pub fn request(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let decoders = decoders();
    decoders[usize::from(which) % decoders.len()](bytes);
}

type Decode = fn(&[u8]);

macro_rules! decoders {
    ($($t:ident),* $(,)?) => {
        fn decoders() -> &'static [Decode] {
            &[$(decode_as::<pb::$t> as Decode,)* send_stream_item]
        }
        /// The number of request types [`request`] tells apart (its first byte, modulo this).
        #[cfg(test)]
        const COUNT: usize = [$(stringify!($t),)*].len() + 1;
    };
}

decoders!(
    RegisterRequest,
    LoginRequest,
    SubscribeRequest,
    HeartbeatRequest,
    LogoutRequest,
    SendMessageRequest,
    SendStreamRequest,
    BroadcastRequest,
    ListOnlineRequest,
    BlockRequest,
    UnblockRequest,
    ListBlockedRequest,
    ChangePasswordRequest,
    RequestAddressRequest,
    RespondAddressRequestRequest,
    ListUsersRequest,
    ListSessionsRequest,
    GetStatsRequest,
    KickUserRequest,
    UnlockUserRequest,
    CreateUserRequest,
    DisableUserRequest,
    EnableUserRequest,
    DeleteUserRequest,
    SetPasswordRequest,
);

fn decode_as<T: Message + Default + PartialEq>(bytes: &[u8]) {
    let name = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("request");
    match T::decode(bytes) {
        Ok(request) => {
            let again = T::decode(request.encode_to_vec().as_slice())
                .expect("a decoded request encodes to bytes that decode");
            assert!(again == request, "{name} did not survive a round trip");
        }
        Err(e) => check_refusal(&Error::undecodable(name, &e).into()),
    }
}

/// A `SendStream` item: decoded by the handler, whose refusal keeps the item's `message_id`.
fn send_stream_item(bytes: &[u8]) {
    let item = SendStreamItem::new(Bytes::copy_from_slice(bytes));
    match item.decode() {
        Ok(request) => assert_eq!(
            pb::SendStreamRequest::decode(bytes).ok(),
            Some(request),
            "the item decoded differently from the request"
        ),
        Err(rejected) => {
            assert!(rejected.message_id.len() <= bytes.len());
            check_refusal(&rejected.error.into());
        }
    }
}

/// The answer to an undecodable request: `INVALID_ARGUMENT` with a `BadRequest`.
fn check_refusal(status: &Status) {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(!status.message().is_empty());
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .expect("an undecodable request is answered with a BadRequest");
    assert_eq!(bad.field_violations.len(), 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_type_has_a_decoder() {
        assert_eq!(decoders().len(), COUNT);
        assert_eq!(COUNT, 26);
    }

    #[test]
    fn bad_utf8_in_a_password_is_refused_as_the_server_does() {
        // LoginRequest (index 1), field 2 (password) = 0xff.
        request(&[1, 0x12, 1, 0xff]);
        // And a good login decodes and round-trips.
        let good = pb::LoginRequest {
            username: "alice".into(),
            ..Default::default()
        };
        let mut data = vec![1];
        data.extend(good.encode_to_vec());
        request(&data);
    }
}
