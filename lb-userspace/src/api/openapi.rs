//! The API's OpenAPI 3 document. Each operation comes from its handler's
//! `#[utoipa::path]` and each schema from its wire type's `ToSchema`;
//! [`complete`] adds what the middleware answers for every operation
//! alike (the request-head limits, the token, the browser and content-type
//! checks of a change) and the bearer-token scheme.

use utoipa::{
    openapi::{
        path::{Operation, PathItem},
        schema::{ObjectBuilder, Schema, SchemaType, Type},
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
        ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    },
    OpenApi as _, PartialSchema,
};

use super::{limits, wire::ErrorBody};
use crate::config::ServiceConfig;

/// The scheme's name in the document.
const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "xlb agent API",
        description = "Services, backends, flows, statistics and VRRP of an xlb agent. An \
                       error is answered with a 4xx or 5xx status and the JSON body \
                       {\"error\": ..., \"field\": ...}; field names the configuration key at \
                       fault, when one is."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document's frame, before the routes add their operations.
pub fn document() -> OpenApi {
    ApiDoc::openapi()
}

/// Adds to every operation what the middleware may answer: 414 and 431
/// for a request head over [`limits`]; for a change (any method but GET),
/// 403 for another site's page, 415 for a body that is not JSON and, when
/// the agent has a token (`token`), 401 and the bearer-token requirement.
/// With a token, `GET /api/v1/config` takes it optionally (it shows VRRP
/// passwords to a caller that presents it).
pub fn complete(document: &mut OpenApi, token: bool) {
    let error = |description: String| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in document.paths.paths.iter_mut() {
        for (changes, operation) in operations(item) {
            let responses = &mut operation.responses.responses;
            let mut answers = vec![
                (
                    "414",
                    format!("The URI is over {} bytes", limits::MAX_URI_BYTES),
                ),
                (
                    "431",
                    format!(
                        "Over {} headers or {} bytes of headers",
                        limits::MAX_HEADERS,
                        limits::MAX_HEADER_BYTES
                    ),
                ),
            ];
            if changes {
                answers.push((
                    "403",
                    "Sent from another site's page, or, without a token, to a name rather \
                     than an address"
                        .into(),
                ));
                answers.push((
                    "415",
                    "A body without Content-Type: application/json".into(),
                ));
            }
            if changes && token {
                answers.push((
                    "401",
                    "The request needs the API token (Authorization: Bearer TOKEN)".into(),
                ));
                operation.security = Some(vec![SecurityRequirement::new(BEARER, [""; 0])]);
            } else if token && path == "/api/v1/config" {
                operation.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new(BEARER, [""; 0]),
                ]);
            }
            for (status, description) in answers {
                responses
                    .entry(status.into())
                    .or_insert_with(|| error(description).into());
            }
        }
    }
    if token {
        document
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// A path's operations, each with whether it changes something.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (bool, &mut Operation)> {
    [
        (false, &mut item.get),
        (false, &mut item.head),
        (true, &mut item.post),
        (true, &mut item.put),
        (true, &mut item.patch),
        (true, &mut item.delete),
        (true, &mut item.options),
        (true, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(changes, operation)| Some((changes, operation.as_mut()?)))
}

/// The body of `PATCH /api/v1/services/{name}`: a JSON merge patch over
/// [`ServiceConfig`], whose schema it is made from. Every key is optional
/// and may be null (which removes it); an object value is merged into the
/// service's, so only its type is given.
pub struct ServicePatch;

impl PartialSchema for ServicePatch {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut patch)) = ServiceConfig::schema() else {
            unreachable!("a struct's schema is an object")
        };
        patch.required.clear();
        patch.description = Some(
            "A JSON merge patch (RFC 7396) over the service's configuration form (the body of \
             POST /api/v1/services); null removes a key."
                .into(),
        );
        for property in patch.properties.values_mut() {
            let nullable = match std::mem::replace(property, RefOr::T(Schema::default())) {
                RefOr::T(Schema::Object(mut scalar)) => {
                    scalar.schema_type = or_null(scalar.schema_type);
                    Schema::Object(scalar)
                }
                RefOr::T(Schema::Array(mut array)) => {
                    array.schema_type = or_null(array.schema_type);
                    Schema::Array(array)
                }
                _ => Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
                        .build(),
                ),
            };
            *property = RefOr::T(nullable);
        }
        RefOr::T(Schema::Object(patch))
    }
}

impl utoipa::ToSchema for ServicePatch {}

/// `types`, or null.
fn or_null(types: SchemaType) -> SchemaType {
    let mut types = match types {
        SchemaType::Type(one) => vec![one],
        SchemaType::Array(many) => many,
        SchemaType::AnyValue => return SchemaType::AnyValue,
    };
    if !types.contains(&Type::Null) {
        types.push(Type::Null);
    }
    SchemaType::Array(types)
}
