//! A small CORS layer, on when `api.cors_allowed_origins` lists origins:
//! answers preflight requests and marks answers to allowed origins.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The allowed origins (`*` allows any).
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// CORS for `origins`; `None` when the list is empty (CORS off).
    pub fn new(origins: &[String]) -> Option<Arc<Self>> {
        (!origins.is_empty()).then(|| Arc::new(Self { origins: origins.to_vec() }))
    }

    fn allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// The middleware.
pub async fn layer(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).filter(|o| o.to_str().is_ok_and(|o| cors.allowed(o))).cloned();
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if origin.is_some() {
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        r
    } else {
        next.run(request).await
    };
    mark(response.headers_mut(), origin);
    response
}

fn mark(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
}
