//! JSON errors for both HTTP systems (`kv-store`, `registers-server`), so
//! they answer alike: `{"error": "..."}` with the status, for their own
//! errors, for a route that does not exist (404) and for a method a route
//! does not take (405, with an `Allow`-free body that says which).
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = axum::Json(serde_json::json!({ "error": message.into() }));
    (status, body).into_response()
}

/// The fallback for a path no route matches: 404.
pub async fn no_route(uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

/// The fallback for a route that exists but not for this method: 405.
pub async fn wrong_method(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
