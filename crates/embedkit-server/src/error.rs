//! Errors as HTTP answers: OpenAI's `{"error": {"message", "type", "param", "code"}}` on `/v1/*`, TEI's
//! `{"error", "error_type"}` on the TEI routes. Every failure is JSON with a one-line message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Which wire format an error body takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// OpenAI's nested error object.
    OpenAi,
    /// text-embeddings-inference's flat object.
    Tei,
}

/// A failed request: the status, a message naming what and where, and the field at fault.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One line saying what is wrong.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// Body format.
    pub style: ErrorStyle,
    /// Seconds for a Retry-After header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            style: ErrorStyle::Tei,
            retry_after: None,
        }
    }
    /// 400: the body is not JSON.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 422: JSON of the wrong shape or a value out of range.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message).param(param)
    }
    /// Names the field at fault.
    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }
    /// Sets the body format.
    pub fn style(mut self, style: ErrorStyle) -> Self {
        self.style = style;
        self
    }

    /// OpenAI's `type` for a status.
    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// TEI's `error_type` for a status.
    fn tei_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "Unauthorized",
            413 => "Validation",
            422 => "Validation",
            429 => "Overloaded",
            503 => "Unhealthy",
            400..=499 => "Validation",
            _ => "Backend",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.style {
            ErrorStyle::OpenAi => serde_json::json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type(),
                    "param": self.param,
                    "code": self.status.as_u16().to_string(),
                }
            }),
            ErrorStyle::Tei => serde_json::json!({
                "error": self.message,
                "error_type": self.tei_type(),
            }),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<embedkit_core::EmbedError> for ApiError {
    fn from(e: embedkit_core::EmbedError) -> Self {
        use embedkit_core::EmbedError as E;
        match &e {
            E::InvalidOption { option, .. } => {
                let param = match *option {
                    "truncate_dim" => "dimensions",
                    other => other,
                };
                ApiError::invalid(param, e.to_string())
            }
            E::Unsupported(_) => ApiError::invalid("model", e.to_string()),
            E::Tokenize { .. } => ApiError::invalid("inputs", e.to_string()),
            E::Backend(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}
