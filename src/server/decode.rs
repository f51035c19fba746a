//! Requests as the server decodes them: bytes that are not a valid message of the request's
//! type — most often a string field that is not UTF-8 — are the caller's mistake, answered
//! `INVALID_ARGUMENT` with a `BadRequest` violation naming the field, never `INTERNAL`.
//!
//! Unary requests are decoded by [`RequestDecoder`] (the decoder of `wire::ServerCodec`).
//! `SendStream` items arrive as [`SendStreamItem`]s, whole and undecoded, so that one bad item is
//! answered on the stream like any other failed send instead of ending it (tonic's stream decoder
//! cannot go on after an item fails to decode).

use super::raw::Raw;
use prost::{DecodeError, Message};
use tonic::{
    Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};

use super::error::Error;
use crate::pb;

/// What prost prefixes every decode error's text with.
const PROST_PREFIX: &str = "failed to decode Protobuf message: ";

impl Error {
    /// The error for a request that prost could not decode as `message` (its type name).
    pub fn undecodable(message: &str, e: &DecodeError) -> Self {
        let (field, cause) = field_and_cause(e);
        let text = if cause.contains("UTF-8") {
            format!("{} is not valid UTF-8", field.as_deref().unwrap_or(message))
        } else {
            match &field {
                Some(field) => format!("{field} could not be decoded: {cause}"),
                None => format!("the request is not a valid {message}: {cause}"),
            }
        };
        Error::Undecodable {
            field,
            message: text,
        }
    }
}

/// The path of the field a decode error happened in (outermost first, `message.body`), if
/// prost named one, and its root cause.
///
/// prost keeps the (message, field) stack private and prints it innermost first:
/// `failed to decode Protobuf message: Inner.field: Outer.field: cause`. A unit test below pins
/// this format, so a prost upgrade that changes it fails there.
fn field_and_cause(e: &DecodeError) -> (Option<String>, String) {
    let text = e.to_string();
    let mut rest = text.strip_prefix(PROST_PREFIX).unwrap_or(&text);
    let mut fields = Vec::new();
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(message) || !ident(field) {
            break;
        }
        fields.push(field.to_owned());
        rest = tail;
    }
    fields.reverse();
    let field = (!fields.is_empty()).then(|| fields.join("."));
    (field, rest.to_owned())
}

/// Decodes one request of type `U`, mapping failures to `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct RequestDecoder<U> {
    settings: BufferSettings,
    _type: std::marker::PhantomData<U>,
}

impl<U> RequestDecoder<U> {
    /// A decoder with these buffer settings.
    pub fn new(settings: BufferSettings) -> Self {
        RequestDecoder {
            settings,
            _type: std::marker::PhantomData,
        }
    }
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            let name = std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or("request");
            Error::undecodable(name, &e).into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.settings
    }
}

/// A `confab.v1.SendStreamRequest` as it arrived: its bytes, decoded by the handler with
/// [`SendStreamItem::decode`]. Decoding it as a [`Message`] never fails.
pub type SendStreamItem = Raw<pb::SendStreamRequest>;

/// An item of a `SendStream` that could not be decoded.
#[derive(Debug)]
pub struct Rejected {
    /// The item's `message_id` when it could be read, for the answer to echo; empty otherwise.
    pub message_id: String,
    /// Why, as the answer says it.
    pub error: Error,
}

/// Just enough of `SendStreamRequest` to find a `message_id` in an item that failed to decode
/// (strings read as bytes, so bad UTF-8 elsewhere does not stop it).
#[derive(Clone, PartialEq, Message)]
struct LenientItem {
    #[prost(message, optional, tag = "1")]
    message: Option<LenientMessage>,
}

#[derive(Clone, PartialEq, Message)]
struct LenientMessage {
    #[prost(bytes = "vec", tag = "3")]
    message_id: Vec<u8>,
}

impl Raw<pb::SendStreamRequest> {
    /// The request, or what to answer instead.
    ///
    /// # Errors
    /// The bytes are not a valid `SendStreamRequest`.
    pub fn decode(&self) -> Result<pb::SendStreamRequest, Rejected> {
        pb::SendStreamRequest::decode(self.bytes().clone()).map_err(|e| Rejected {
            message_id: LenientItem::decode(self.bytes().clone())
                .ok()
                .and_then(|item| item.message)
                .and_then(|m| String::from_utf8(m.message_id).ok())
                .unwrap_or_default(),
            error: Error::undecodable("SendStreamRequest", &e),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::encoding::WireType;

    use super::*;

    /// `message` encoded, then field `tag` again as the bytes `bad` (the last occurrence of a
    /// field is the one decoded).
    fn with_field(message: &impl Message, tag: u32, bad: &[u8]) -> Vec<u8> {
        let mut out = message.encode_to_vec();
        prost::encoding::encode_key(tag, WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(bad.len() as u64, &mut out);
        out.extend_from_slice(bad);
        out
    }

    #[test]
    fn prost_still_names_the_field_and_its_message_in_its_errors() {
        let bytes = with_field(&pb::LoginRequest::default(), 2, b"\xff\xfe");
        let e = pb::LoginRequest::decode(bytes.as_slice()).unwrap_err();
        let (field, cause) = field_and_cause(&e);
        assert_eq!(field.as_deref(), Some("password"), "{e}");
        assert!(cause.contains("UTF-8"), "{cause}");
        let Error::Undecodable { message, .. } = Error::undecodable("LoginRequest", &e) else {
            panic!("not Undecodable");
        };
        assert_eq!(message, "password is not valid UTF-8");
    }

    #[test]
    fn a_nested_field_is_named_by_its_path() {
        let inner = with_field(&pb::SendMessageRequest::default(), 2, b"\xc3\x28");
        let mut outer = Vec::new();
        prost::encoding::bytes::encode(1, &inner, &mut outer);
        let e = pb::SendStreamRequest::decode(outer.as_slice()).unwrap_err();
        assert_eq!(field_and_cause(&e).0.as_deref(), Some("message.body"));
    }

    #[test]
    fn garbage_is_invalid_without_a_field_when_prost_names_none() {
        // A key with wire type 7, which does not exist.
        let e = pb::LoginRequest::decode(&[0x0f_u8][..]).unwrap_err();
        let error = Error::undecodable("LoginRequest", &e);
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        let Error::Undecodable { field, message } = error else {
            panic!("not Undecodable");
        };
        assert_eq!(field, None);
        assert!(
            message.starts_with("the request is not a valid LoginRequest"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_stream_item_keeps_its_message_id_for_the_answer() {
        let msg = pb::SendMessageRequest {
            to: "bob".into(),
            body: String::new(),
            message_id: "m-7".into(),
        };
        let inner = with_field(&msg, 2, b"\xff");
        let mut outer = Vec::new();
        prost::encoding::bytes::encode(1, &inner, &mut outer);
        let item = SendStreamItem::new(Bytes::from(outer));
        let rejected = item.decode().unwrap_err();
        assert_eq!(rejected.message_id, "m-7");
        assert_eq!(
            rejected.error.to_string(),
            "message.body is not valid UTF-8"
        );

        let good = pb::SendStreamRequest {
            message: Some(msg.clone()),
        };
        let item = SendStreamItem::new(Bytes::from(good.encode_to_vec()));
        assert_eq!(item.decode().unwrap().message, Some(msg));
        assert!(!format!("{item:?}").contains("m-7"));
    }
}
