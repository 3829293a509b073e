//! Measures what DynamoDB reads cost: an SDK interceptor (off unless switched on, for the
//! bench) that reads each successful GetItem, BatchGetItem and Query answer, sizes every
//! item returned by DynamoDB's rules and counts the read capacity units they cost — 4 KB or
//! part of it per item for a get (half of that eventually consistent), the items' summed
//! size in 4 KB steps for a query. An emulator's own `ConsumedCapacity` is a placeholder;
//! the items it returns are the real ones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde_json::Value;

/// Read units and items read, in thousandths of a unit (a half unit is 500).
#[derive(Clone, Debug, Default)]
pub struct ReadUnits {
    on: Arc<AtomicBool>,
    milli_units: Arc<AtomicU64>,
    items: Arc<AtomicU64>,
}

impl ReadUnits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts (or stops) measuring; counts kept so far stay.
    pub fn measure(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.milli_units.store(0, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
    }

    /// Read capacity units the measured reads cost.
    pub fn units(&self) -> f64 {
        self.milli_units.load(Ordering::Relaxed) as f64 / 1_000.0
    }

    /// Items the measured reads returned.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }
}

const UNIT_BYTES: u64 = 4 * 1024;

/// A read request's body, kept for its answer (which reads it needs consistent).
#[derive(Clone, Debug)]
struct Asked(Value);

impl Storable for Asked {
    type Storer = StoreReplace<Self>;
}

/// The operation, if it is a read this meter sizes.
fn read_op(cfg: &ConfigBag) -> Option<&'static str> {
    let meta = cfg.load::<Metadata>()?;
    ["GetItem", "BatchGetItem", "Query"]
        .into_iter()
        .find(|op| *op == meta.name())
}

/// An attribute value's size by DynamoDB's rules (strings and binaries their bytes, a number
/// about one byte per two digits plus one, a set or document its members plus 3 bytes).
fn value_size(value: &Value) -> u64 {
    let Some((kind, v)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (kind.as_str(), v) {
        ("S" | "B", Value::String(s)) => s.len() as u64,
        ("N", Value::String(n)) => number_size(n),
        ("BOOL" | "NULL", _) => 1,
        ("SS" | "BS", Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map_or(0, |s| s.len() as u64))
            .sum(),
        ("NS", Value::Array(items)) => items
            .iter()
            .map(|n| n.as_str().map_or(0, number_size))
            .sum(),
        ("L", Value::Array(items)) => 3 + items.iter().map(|v| 1 + value_size(v)).sum::<u64>(),
        ("M", Value::Object(map)) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() as u64 + value_size(v))
                .sum::<u64>()
        }
        _ => 0,
    }
}

/// An item's size: each attribute's name and value.
pub fn item_size(item: &Value) -> u64 {
    item.as_object().map_or(0, |attributes| {
        attributes
            .iter()
            .map(|(name, value)| name.len() as u64 + value_size(value))
            .sum()
    })
}

/// The size of an item as the SDK holds it, by the same rules as `item_size`.
pub fn stored_item_size(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> u64 {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    fn size(value: &A) -> u64 {
        match value {
            A::S(s) => s.len() as u64,
            A::B(b) => b.as_ref().len() as u64,
            A::N(n) => number_size(n),
            A::Bool(_) | A::Null(_) => 1,
            A::Ss(items) => items.iter().map(|s| s.len() as u64).sum(),
            A::Bs(items) => items.iter().map(|b| b.as_ref().len() as u64).sum(),
            A::Ns(items) => items.iter().map(|n| number_size(n)).sum(),
            A::L(items) => 3 + items.iter().map(|v| 1 + size(v)).sum::<u64>(),
            A::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| 1 + k.len() as u64 + size(v))
                    .sum::<u64>()
            }
            _ => 0,
        }
    }
    item.iter()
        .map(|(name, value)| name.len() as u64 + size(value))
        .sum()
}

/// A number's size: about one byte per two significant digits, plus one.
fn number_size(n: &str) -> u64 {
    (n.trim_start_matches('-').len() as u64).div_ceil(2) + 1
}

/// Thousandths of a unit for `units` 4 KB steps, halved when eventually consistent.
fn milli(steps: u64, consistent: bool) -> u64 {
    if consistent {
        steps * 1_000
    } else {
        steps * 500
    }
}

impl Intercept for ReadUnits {
    fn name(&self) -> &'static str {
        "bulklink-read-units"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.on.load(Ordering::Relaxed) && read_op(cfg).is_some() {
            let asked = context
                .request()
                .body()
                .bytes()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            cfg.interceptor_state().store_put(Asked(asked));
        }
        Ok(())
    }

    // After deserialization the answer's body is in memory.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(op) = read_op(cfg) else {
            return Ok(());
        };
        let response = context.response();
        if response.status().as_u16() != 200 {
            return Ok(());
        }
        let asked = cfg
            .load::<Asked>()
            .map_or(Value::Null, |Asked(v)| v.clone());
        let answer: Value = response
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let (units, items) = match op {
            "GetItem" => {
                let consistent = asked["ConsistentRead"].as_bool().unwrap_or(false);
                match answer.get("Item") {
                    Some(item) => (
                        milli(item_size(item).div_ceil(UNIT_BYTES).max(1), consistent),
                        1,
                    ),
                    None => (milli(1, consistent), 0),
                }
            }
            "BatchGetItem" => {
                let mut units = 0;
                let mut items = 0;
                if let Some(tables) = answer["Responses"].as_object() {
                    for (table, returned) in tables {
                        let consistent = asked["RequestItems"][table]["ConsistentRead"]
                            .as_bool()
                            .unwrap_or(false);
                        for item in returned.as_array().into_iter().flatten() {
                            units += milli(item_size(item).div_ceil(UNIT_BYTES).max(1), consistent);
                            items += 1;
                        }
                    }
                }
                (units, items)
            }
            _ => {
                let consistent = asked["ConsistentRead"].as_bool().unwrap_or(false);
                let returned = answer["Items"].as_array();
                let bytes: u64 = returned.into_iter().flatten().map(item_size).sum();
                (
                    milli(bytes.div_ceil(UNIT_BYTES).max(1), consistent),
                    returned.map_or(0, |r| r.len() as u64),
                )
            }
        };
        self.milli_units.fetch_add(units, Ordering::Relaxed);
        self.items.fetch_add(items, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn items_are_sized_as_dynamodb_sizes_them() {
        let item = json!({
            "pk": { "S": "LOC#0190" },
            "n": { "N": "1234" },
            "t": { "BOOL": true },
            "m": { "M": { "a": { "S": "xy" } } },
        });
        // pk 2+8, n 1+3, t 1+1, m 1 + (3 + 1 + 1 + 2)
        assert_eq!(item_size(&item), 10 + 4 + 2 + 8);
        assert_eq!(milli(1, true), 1_000);
        assert_eq!(milli(3, false), 1_500);
    }
}
