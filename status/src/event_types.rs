//! The event catalog: every event type bulklink's webhooks send, each with what it means,
//! the JSON Schema of its delivery's body and an example — the schema made from the very
//! types the deliverer serializes (`JobEvent`, `WebhookEvent`, `OfferEvent`), so they cannot drift apart.

use axum::response::{IntoResponse, Response};
use axum::Json;
use bulklink_core::domain::{
    payload_value, Event, EventKind, EventType, JobEvent, OfferEvent, WebhookEvent,
};
use bulklink_http::auth::Caller;
use bulklink_http::http::{ApiError, ApiState};
use bulklink_http::openapi::Unauthorized;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list_event_types))
}

/// One event type of the catalog.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventTypeInfo {
    #[serde(rename = "type")]
    event_type: EventType,
    description: &'static str,
    /// JSON Schema (2020-12) of a delivery's body: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
    schema: Value,
    /// A delivery's body of this type.
    #[schema(value_type = Object)]
    example: Value,
}

#[derive(Debug, Serialize, ToSchema)]
struct EventTypes {
    items: Vec<EventTypeInfo>,
}

/// Every event type webhooks send: what it means, the JSON Schema of its delivery's body, an
/// example. The same for every caller; subscriptions filter on these types.
#[utoipa::path(
    get,
    path = "/webhooks/event-types",
    tag = "webhooks",
    operation_id = "listWebhookEventTypes",
    responses(
        (status = 200, description = "The event catalog", body = EventTypes),
        (status = 401, response = Unauthorized),
    )
)]
async fn list_event_types(_caller: Caller) -> Result<Response, ApiError> {
    Ok(Json(catalog()).into_response())
}

fn catalog() -> EventTypes {
    EventTypes {
        items: EventType::ALL
            .iter()
            .map(|t| EventTypeInfo {
                event_type: *t,
                description: t.description(),
                schema: payload_schema(*t),
                example: payload_value(&Event::example(*t)),
            })
            .collect(),
    }
}

/// The JSON Schema of a delivery of `event_type`: its envelope, and `data` a `JobEvent` (for
/// a subscription's own event a `WebhookEvent`, for an offer's an `OfferEvent`) whose `type` is this one (and `status`
/// the one it is always sent in), every schema it refers to under `$defs`.
pub fn payload_schema(event_type: EventType) -> Value {
    match event_type.kind() {
        EventKind::Job => schema_of::<JobEvent>(event_type),
        EventKind::Webhook => schema_of::<WebhookEvent>(event_type),
        EventKind::Offer => schema_of::<OfferEvent>(event_type),
    }
}

fn schema_of<T: ToSchema>(event_type: EventType) -> Value {
    let mut named = Vec::new();
    T::schemas(&mut named);
    let mut defs = Map::new();
    let name = T::name().into_owned();
    defs.insert(
        name.clone(),
        serde_json::to_value(T::schema()).unwrap_or_default(),
    );
    for (name, schema) in named {
        defs.insert(name, serde_json::to_value(schema).unwrap_or_default());
    }
    let mut defs = Value::Object(defs);
    rewrite_refs(&mut defs);
    let mut pinned = json!({ "type": { "const": event_type.as_str() } });
    if let Some(status) = event_type.status() {
        pinned["status"] = json!({ "const": status });
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type.as_str(),
        "type": "object",
        "required": ["type", "timestamp", "data"],
        "properties": {
            "type": { "const": event_type.as_str() },
            "timestamp": { "type": "string", "format": "date-time" },
            "data": {
                "allOf": [
                    { "$ref": format!("#/$defs/{name}") },
                    { "type": "object", "properties": pinned }
                ]
            }
        },
        "$defs": defs,
    })
}

/// OpenAPI's `#/components/schemas/X` references as this document's `#/$defs/X`.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix("#/components/schemas/") {
                            *target = format!("#/$defs/{name}");
                        }
                    }
                    (_, v) => rewrite_refs(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of a schema resolves inside it.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push(target.clone()),
                        (_, v) => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn each_types_schema_is_self_contained_and_names_its_type() {
        for t in EventType::ALL {
            let schema = payload_schema(t);
            let mut found = Vec::new();
            refs(&schema, &mut found);
            assert!(!found.is_empty());
            for target in found {
                let name = target
                    .strip_prefix("#/$defs/")
                    .unwrap_or_else(|| panic!("{target} is not local"));
                assert!(schema["$defs"].get(name).is_some(), "{t:?}: {name} missing");
            }
            assert_eq!(schema["properties"]["type"]["const"], t.as_str());
        }
    }
}
