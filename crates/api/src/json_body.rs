//! Request bodies: a JSON object, read with a size limit and checked field by field so that
//! every problem comes back as a DRF-shaped message instead of one serde error.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use newspaper_domain::{FieldError, ValidationErrors};
use serde_json::{Map, Value};

use crate::ApiError;
use crate::state::AppState;

/// Bodies larger than the limit are still read (and discarded) up to this size, so the client
/// receives the 413 instead of a connection reset mid-upload.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// A request body that is a JSON object (an empty body counts as `{}`).
#[derive(Debug, Clone, Default)]
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest for JsonObject {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move { JsonObject::read(&req, payload).await })
    }
}

impl JsonObject {
    /// Reads and parses the body. Handlers that must authorize first (as DRF does before it
    /// looks at a body) take `web::Payload` and call this afterwards.
    pub async fn read(req: &HttpRequest, mut payload: Payload) -> Result<Self, ApiError> {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(1024 * 1024, |state| state.settings.max_body_bytes);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = web::BytesMut::new();
        let mut total = 0usize;
        let mut too_large = declared_len.is_some_and(|len| len > limit);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("Could not read the request body: {e}."))
            })?;
            total += chunk.len();
            if total > limit {
                too_large = true;
            }
            if too_large {
                if total > DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            body.extend_from_slice(&chunk);
        }
        if too_large {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        check_content_type(req.headers().get(header::CONTENT_TYPE))?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("JSON parse error - {e}")))?;
        match value {
            Value::Object(map) => Ok(JsonObject(map)),
            other => Err(ApiError::field(
                ValidationErrors::NON_FIELD,
                format!("Invalid data. Expected a dictionary, but got {}.", type_name(&other)),
            )),
        }
    }
}

fn check_content_type(value: Option<&header::HeaderValue>) -> Result<(), ApiError> {
    let raw = value.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(raw.to_owned()))
    }
}

/// The JSON type of a value, as named in error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl JsonObject {
    /// A string field that must be present.
    pub fn required_str(&self, field: &str, errors: &mut ValidationErrors) -> Option<&str> {
        match self.0.get(field) {
            None => {
                errors.add(field, "This field is required.");
                None
            }
            Some(value) => errors.check(field, as_str(value)),
        }
    }

    /// A required string that may not be empty either (DRF's `CharField`, which refuses blank
    /// values by default): tokens, ids.
    pub fn required_text(&self, field: &str, errors: &mut ValidationErrors) -> Option<&str> {
        match self.required_str(field, errors) {
            Some("") => {
                errors.add(field, "This field may not be blank.");
                None
            }
            other => other,
        }
    }

    /// A string field that may be absent (`None`); present but not a string is an error.
    pub fn optional_str(&self, field: &str, errors: &mut ValidationErrors) -> Option<&str> {
        self.0.get(field).and_then(|value| errors.check(field, as_str(value)))
    }

    /// Whether the body names this field at all.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
}

fn as_str(value: &Value) -> Result<&str, FieldError> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Err(FieldError::new("This field may not be null.")),
        other => Err(FieldError::new(format!("Not a valid string (got {}).", type_name(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: Value) -> JsonObject {
        JsonObject(json.as_object().cloned().unwrap())
    }

    #[test]
    fn fields_report_missing_null_and_wrong_types() {
        let body = obj(serde_json::json!({"a": "x", "n": null, "i": 3, "l": []}));
        let mut errors = ValidationErrors::new();
        assert_eq!(body.required_str("a", &mut errors), Some("x"));
        assert_eq!(body.required_str("missing", &mut errors), None);
        assert_eq!(body.optional_str("absent", &mut errors), None);
        assert_eq!(body.optional_str("n", &mut errors), None);
        assert_eq!(body.required_str("i", &mut errors), None);
        assert_eq!(body.required_str("l", &mut errors), None);
        let json = serde_json::to_value(&errors).unwrap();
        assert_eq!(json["missing"][0], "This field is required.");
        assert_eq!(json["n"][0], "This field may not be null.");
        assert_eq!(json["i"][0], "Not a valid string (got number).");
        assert_eq!(json["l"][0], "Not a valid string (got array).");
        assert!(json.get("absent").is_none());
    }

    #[test]
    fn only_json_media_types_are_accepted() {
        let ok = |v: &'static str| check_content_type(Some(&header::HeaderValue::from_static(v)));
        assert!(ok("application/json").is_ok());
        assert!(ok("Application/JSON; charset=utf-8").is_ok());
        assert!(ok("application/merge-patch+json").is_ok());
        assert!(ok("text/plain").is_err());
        assert!(check_content_type(None).is_err());
    }
}
