//! The result shape of both query messages.

use serde_json::{Map, Value};

/// Rows as JSON objects keyed by column name, the result shape of both query messages.
pub type Rows = Vec<Map<String, Value>>;
