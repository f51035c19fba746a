//! The client side of confab: the typed gRPC client library ([`api`]) shared by the chat
//! program, `confab admin`, the load generator and the tests.

pub mod api;
