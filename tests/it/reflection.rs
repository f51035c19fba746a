//! SPEC §9: both reflection versions and health, seen by a plain gRPC client.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

use crate::common::*;

const SERVICES: [&str; 4] = [
    "confab.v1.Admin",
    "confab.v1.Auth",
    "confab.v1.Chat",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let srv = TestServer::start().await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(srv.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = within("a v1 reflection answer", responses.message())
        .await
        .unwrap()
        .unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in SERVICES {
        assert!(names.iter().any(|n| n == s), "v1 lists {names:?}");
    }

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(srv.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = within("a v1alpha reflection answer", responses.message())
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in SERVICES {
        assert!(names.iter().any(|n| n == s), "v1alpha lists {names:?}");
    }
}

#[tokio::test]
async fn health_reports_serving_per_service() {
    let srv = TestServer::start().await;
    let mut health = HealthClient::new(srv.channel().await);
    for service in ["", "confab.v1.Chat", "confab.v1.Auth"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}
