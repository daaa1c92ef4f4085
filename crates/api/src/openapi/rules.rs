//! Document modifiers: the bearer scheme; the validation rules of the domain, as `pattern`s on
//! the fields they govern (one source for the server and the document: a test in the domain
//! crate checks each pattern against its validator); and the responses every operation of a
//! kind can give (503 when the database is out of reach; 413 and 415 for JSON bodies).

use newspaper_domain::{CONTENT_PATTERN, Email, Password, PostTitle, Username};
use utoipa::Modify;
use utoipa::openapi::schema::{Schema, SchemaType};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

/// `(schema, property, pattern)`: where each rule applies.
const PATTERNS: &[(&str, &str, &str)] = &[
    ("RegisterRequest", "email", Email::PATTERN),
    ("RegisterRequest", "password", Password::PATTERN),
    ("RegisterRequest", "username", Username::PATTERN),
    ("PasswordResetRequest", "email", Email::PATTERN),
    ("PasswordResetConfirmRequest", "new_password", Password::PATTERN),
    ("PasswordChangeRequest", "new_password", Password::PATTERN),
    ("PostWrite", "title", PostTitle::PATTERN),
    ("PostWrite", "content", CONTENT_PATTERN),
    ("PostPatch", "title", PostTitle::PATTERN),
    ("PostPatch", "content", CONTENT_PATTERN),
];

/// The bearer scheme of every authenticated operation.
pub(super) struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some("Access token from POST /api/auth/token/".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Sets the patterns of [`PATTERNS`].
pub(super) struct ValidationRules;

impl Modify for ValidationRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        // A validation error names at least one field.
        if let Some(RefOr::T(Schema::Object(errors))) =
            components.schemas.get_mut("ValidationErrorBody")
        {
            errors.min_properties = Some(1);
        }
        for (schema, property, pattern) in PATTERNS {
            let object = match components.schemas.get_mut(*schema) {
                Some(RefOr::T(Schema::Object(object))) => object,
                _ => panic!("the OpenAPI document has no object schema {schema}"),
            };
            match object.properties.get_mut(*property) {
                Some(RefOr::T(Schema::Object(field))) => {
                    field.pattern = Some((*pattern).to_owned())
                }
                _ => panic!("{schema} has no string property {property}"),
            }
        }
    }
}

/// Adds the responses shared by whole kinds of operations.
pub(super) struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let detail =
            || ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorDetail"))).build();
        let unavailable = ResponseBuilder::new()
            .description(
                "The database (or the channel layer) is out of reach or too slow; retry after \
                 `Retry-After` seconds.",
            )
            .content("application/json", detail())
            .build();
        let too_large = ResponseBuilder::new()
            .description("The body is larger than 1 MiB.")
            .content("application/json", detail())
            .build();
        let not_json = ResponseBuilder::new()
            .description("The body is not `application/json`.")
            .content("application/json", detail())
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if path != "/api/schema/" {
                    responses.entry("503".into()).or_insert_with(|| RefOr::T(unavailable.clone()));
                }
                if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
                    // An optional body (PATCH's) is absent or an object, never JSON `null`.
                    for content in body.content.values_mut() {
                        let RefOr::T(content) = content else { continue };
                        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                            let objects: Vec<RefOr<Schema>> = one_of
                                .items
                                .iter()
                                .filter(|item| !is_null(item))
                                .cloned()
                                .collect();
                            if let [only] = objects.as_slice() {
                                content.schema = Some(only.clone());
                            }
                        }
                    }
                }
                if operation.request_body.is_some() {
                    responses.entry("413".into()).or_insert_with(|| RefOr::T(too_large.clone()));
                    responses.entry("415".into()).or_insert_with(|| RefOr::T(not_json.clone()));
                }
            }
        }
    }
}

/// Whether a schema is `{"type": "null"}`.
fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(
        schema,
        RefOr::T(Schema::Object(object))
            if object.schema_type == SchemaType::Type(utoipa::openapi::Type::Null)
    )
}
