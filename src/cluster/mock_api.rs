//! A scripted API server for this module's unit tests (no cluster runs
//! here): each test takes the requests a call makes, in order, asserts
//! them, and answers them.

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, pair};

pub type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A client whose every request is the returned server's to answer.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, server) = pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "icarus"), server)
}

/// Takes the next request, checks its method and path, answers `status`
/// with `body`; returns what the request sent.
pub async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
    status: u16,
    body: Value,
) -> Value {
    let (request, respond) = server.next_request().await.expect("a request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    respond.send_response(response);
    sent
}

/// The API server's `Status` for a failure.
pub fn api_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}
