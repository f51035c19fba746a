//! Requests whose bytes are not valid protobuf for their type — above all a string field that is
//! not UTF-8 — sent as raw bytes through a codec that does not encode: every RPC answers
//! `INVALID_ARGUMENT` with a `BadRequest` violation naming the field, and a `SendStream` answers
//! the bad item and goes on. Bytes that are no protobuf at all are INVALID_ARGUMENT too.

use bytes::{Buf, BufMut};
use confab::{client::api, pb};
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint},
};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
};
use tonic_types::StatusExt;

use crate::common::*;

/// Sends and receives protobuf bytes as they are.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// `message` encoded, then field `tag` once more holding `bytes` (the last occurrence of a
/// field is the one decoded, so this one decides).
fn with_field(message: &impl Message, tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = message.encode_to_vec();
    encode_key(tag, WireType::LengthDelimited, &mut out);
    encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Not UTF-8: a lone continuation byte, and an overlong encoding of '/'.
const NOT_UTF8: &[u8] = b"ab\x80c\xc0\xaf";

fn request<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn unary(
    srv: &TestServer,
    path: &'static str,
    token: Option<&str>,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(srv.channel().await);
    grpc.ready().await.unwrap();
    grpc.unary(
        request(bytes, token),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Asserts INVALID_ARGUMENT with a BadRequest violation for exactly `field`.
#[track_caller]
fn assert_names_field(result: Result<Vec<u8>, Status>, field: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert!(
        status.message().contains("UTF-8"),
        "{what}: {:?}",
        status.message()
    );
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{what}: no BadRequest in {status:?}"));
    let fields: Vec<&str> = bad
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, [field], "{what}");
}

#[tokio::test]
async fn a_string_that_is_not_utf8_is_invalid_argument_naming_the_field_in_every_service() {
    let srv = TestServer::start().await;
    // alice first, so that bob's first event is a message, not her presence.
    let alice = srv.user("alice").await;
    let mut bob = srv.user("bob").await;
    let admin = srv.handle.admin_token.clone();
    let user = Some(alice.token.as_str());
    let cases: &[(&'static str, Option<&str>, Vec<u8>, &str)] = &[
        (
            "/confab.v1.Auth/Register",
            None,
            with_field(&pb::RegisterRequest::default(), 1, NOT_UTF8),
            "username",
        ),
        (
            "/confab.v1.Auth/Login",
            None,
            with_field(&pb::LoginRequest::default(), 2, NOT_UTF8),
            "password",
        ),
        (
            "/confab.v1.Auth/Login",
            None,
            with_field(&pb::LoginRequest::default(), 5, NOT_UTF8),
            "peer_host",
        ),
        (
            "/confab.v1.Chat/SendMessage",
            user,
            with_field(
                &pb::SendMessageRequest {
                    to: "bob".into(),
                    body: "x".into(),
                    message_id: "m1".into(),
                },
                2,
                NOT_UTF8,
            ),
            "body",
        ),
        (
            "/confab.v1.Chat/SendMessage",
            user,
            with_field(&pb::SendMessageRequest::default(), 3, NOT_UTF8),
            "message_id",
        ),
        (
            "/confab.v1.Chat/Block",
            user,
            with_field(&pb::BlockRequest::default(), 1, NOT_UTF8),
            "user",
        ),
        (
            "/confab.v1.Chat/RespondAddressRequest",
            user,
            with_field(&pb::RespondAddressRequestRequest::default(), 1, NOT_UTF8),
            "request_id",
        ),
        (
            "/confab.v1.Admin/CreateUser",
            Some(admin.as_str()),
            with_field(&pb::CreateUserRequest::default(), 1, NOT_UTF8),
            "username",
        ),
        (
            "/confab.v1.Admin/KickUser",
            Some(admin.as_str()),
            with_field(&pb::KickUserRequest::default(), 1, NOT_UTF8),
            "username",
        ),
    ];
    for (path, token, bytes, field) in cases {
        let result = unary(&srv, path, *token, bytes.clone()).await;
        assert_names_field(result, field, &format!("{path} with a bad {field}"));
    }

    // The same bytes with the field valid are served: the codec sends what a client would.
    let good = pb::SendMessageRequest {
        to: "bob".into(),
        body: "fine".into(),
        message_id: "m2".into(),
    };
    let reply = unary(
        &srv,
        "/confab.v1.Chat/SendMessage",
        user,
        good.encode_to_vec(),
    )
    .await
    .expect("a valid message sent as raw bytes");
    pb::SendMessageResponse::decode(reply.as_slice()).unwrap();
    // bob got that one and none of the bad ones.
    assert_eq!(bob.message().await.body, "fine");
}

#[tokio::test]
async fn bytes_that_are_not_protobuf_are_invalid_argument_not_internal() {
    let srv = TestServer::start().await;
    // A key with wire type 7 (none such), then a length running past the end.
    for bytes in [vec![0x0f_u8], vec![0x0a, 0x05, b'a']] {
        let status = unary(&srv, "/confab.v1.Auth/Login", None, bytes.clone())
            .await
            .expect_err("garbage is refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bytes:?}: {status:?}"
        );
        // Still a BadRequest, as the proto promises for every INVALID_ARGUMENT: the empty field
        // is the request as a whole.
        let bad = status
            .get_details_bad_request()
            .expect("a BadRequest detail");
        assert_eq!(bad.field_violations.len(), 1);
        assert!(
            !status.message().contains("internal"),
            "{:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn send_stream_answers_an_item_that_is_not_utf8_and_goes_on() {
    let srv = TestServer::start().await;
    // alice first, so that bob's first event is a message, not her presence.
    let alice = srv.user("alice").await;
    let mut bob = srv.user("bob").await;
    let item = |body: &str, id: &str| pb::SendStreamRequest {
        message: Some(pb::SendMessageRequest {
            to: "bob".into(),
            body: body.into(),
            message_id: id.into(),
        }),
    };
    let bad = {
        let inner = with_field(
            item("placeholder", "m-bad").message.as_ref().unwrap(),
            2,
            NOT_UTF8,
        );
        let mut outer = Vec::new();
        prost::encoding::bytes::encode(1, &inner, &mut outer);
        outer
    };
    let items = vec![
        item("first", "m-1").encode_to_vec(),
        bad,
        item("third", "m-3").encode_to_vec(),
    ];
    let mut grpc = tonic::client::Grpc::new(api::connect(&srv.url, None).await.expect("connect"));
    grpc.ready().await.unwrap();
    let mut answers = grpc
        .streaming(
            request(tokio_stream::iter(items), Some(&alice.token)),
            PathAndQuery::from_static("/confab.v1.Chat/SendStream"),
            RawCodec,
        )
        .await
        .expect("the stream opens")
        .into_inner();
    let mut got = Vec::new();
    while let Some(bytes) = within("SendStream answers", answers.message())
        .await
        .expect("the stream does not fail")
    {
        got.push(pb::SendStreamResponse::decode(bytes.as_slice()).unwrap());
    }
    let summary: Vec<(&str, i32)> = got
        .iter()
        .map(|r| (r.message_id.as_str(), r.code))
        .collect();
    assert_eq!(
        summary,
        [
            ("m-1", Code::Ok as i32),
            ("m-bad", Code::InvalidArgument as i32),
            ("m-3", Code::Ok as i32)
        ]
    );
    assert!(
        got[1].error.contains("body is not valid UTF-8"),
        "{:?}",
        got[1].error
    );
    assert_eq!(bob.message().await.body, "first");
    assert_eq!(bob.message().await.body, "third");
}
