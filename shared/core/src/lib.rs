//! bulklink's core: the domain (ids, jobs, chunks, offers, webhooks), the ports every
//! backend implements, job kinds, the lifecycle steps the worker, fanout and sweeper have in
//! common, settings, the clock and the store's errors. No I/O dependency: the adapters
//! (`bulklink-aws`, `bulklink-sqlite`), the HTTP edge (`bulklink-http`) and the Lambda glue
//! (`bulklink-lambda`) build on it. The `openapi` feature adds the domain's OpenAPI schemas
//! (only the HTTP edge enables it).
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod budget;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod estimate;
pub mod importing;
pub mod kinds;
pub mod lifecycle;
pub mod ports;
pub mod replay;
pub mod reports;
pub mod rules;
pub mod sealing;
pub mod telemetry;
pub mod uploads;

pub use clock::Clock;
pub use config::Settings;
pub use error::{StoreError, StoreResult};
pub use ports::Ports;

/// Implements `Deserialize` for a request body type from a JSON object only.
///
/// serde's derive also builds a struct from a JSON array of its fields in order, so
/// `"filter": [null, null]` would pass as a filter. The type derives with
/// `#[serde(remote = "Self")]`, which turns the derived code into inherent functions, and this
/// macro puts a map-only front on them (and forwards `Serialize` when asked:
/// `json_object_only!(Type, serialize)`).
#[macro_export]
macro_rules! json_object_only {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Object;
                impl<'de> serde::de::Visitor<'de> for Object {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$ty, A::Error> {
                        <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(Object)
            }
        }
    };
    ($ty:ty, serialize) => {
        $crate::json_object_only!($ty);
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    };
}
