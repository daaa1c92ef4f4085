//! Validation errors in the shape clients of Django REST Framework know: a message list per field.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Why one value was rejected; a human-readable sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(pub String);

impl FieldError {
    /// A rejection with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FieldError {}

/// Every problem found in one input, keyed by field (`non_field_errors` for the whole body).
///
/// Serializes to `{"title": ["This field is required."]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors {
    fields: BTreeMap<String, Vec<String>>,
}

impl ValidationErrors {
    /// The key DRF uses for errors about the body as a whole.
    pub const NON_FIELD: &'static str = "non_field_errors";

    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One error on one field.
    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Records a message against a field.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.fields.entry(field.to_owned()).or_default().push(message.into());
    }

    /// Keeps the value of `result`, or records its error against `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(FieldError(message)) => {
                self.add(field, message);
                None
            }
        }
    }

    /// Like [`ValidationErrors::check`], for a rule set that reports every problem at once
    /// (a password).
    pub fn check_all<T>(&mut self, field: &str, result: Result<T, Vec<FieldError>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(problems) => {
                for FieldError(message) in problems {
                    self.add(field, message);
                }
                None
            }
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The messages per field.
    pub fn fields(&self) -> &BTreeMap<String, Vec<String>> {
        &self.fields
    }

    /// `Ok(value)` when nothing was recorded, otherwise these errors.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, messages) in &self.fields {
            for message in messages {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{field}: {message}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_field_to_message_list() {
        let mut errors = ValidationErrors::new();
        errors.add("title", "This field is required.");
        errors.add("title", "Another.");
        errors.add("status", "Bad.");
        assert_eq!(
            serde_json::to_value(&errors).unwrap(),
            serde_json::json!({"status": ["Bad."], "title": ["This field is required.", "Another."]})
        );
        assert_eq!(
            errors.to_string(),
            "status: Bad.; title: This field is required.; title: Another."
        );
    }

    #[test]
    fn check_records_errors_and_passes_values() {
        let mut errors = ValidationErrors::new();
        assert_eq!(errors.check("a", Ok::<_, FieldError>(1)), Some(1));
        assert!(errors.is_empty());
        assert_eq!(errors.check::<i32>("a", Err(FieldError::new("no"))), None);
        assert!(errors.clone().into_result(()).is_err());
        assert_eq!(errors.fields()["a"], vec!["no".to_owned()]);
    }
}
