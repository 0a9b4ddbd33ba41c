//! `GET /v1/status` and `GET /metrics`: views of the agent's state with no secret in them.
//! Only names, versions, times, counts and error texts (which never carry secrets) appear.
//!
//! Each part of the agent renders its own entries (a credential's token, the parameters
//! read, the AWS credential source) and `Agent` puts them together in a [`Document`]. A
//! subsystem beside the token core (the rotation) adds its parts through [`View`], so
//! the core never needs to know it (docs/design.md, "Subsystems").

use serde_json::{Map, Value};

use crate::metrics::Gauges;

/// A subsystem's part of `/v1/status` and `/metrics`.
pub trait View: Send + Sync {
    /// Adds its section and its fields of the credentials' and parameters' entries.
    fn status(&self, doc: &mut Document);
    /// Adds its gauges.
    fn gauges(&self, gauges: &mut Gauges);
}

/// The status document while it is put together.
pub struct Document {
    top: Map<String, Value>,
    credentials: Map<String, Value>,
    parameters: Map<String, Value>,
}

impl Document {
    /// A top-level section (`rotation`, say).
    pub fn section(&mut self, key: &str, value: Value) {
        self.top.insert(key.to_string(), value);
    }

    /// A field of credential `name`'s entry, if there is such a credential.
    pub fn credential_field(&mut self, name: &str, key: &str, value: Value) {
        if let Some(Value::Object(entry)) = self.credentials.get_mut(name) {
            entry.insert(key.to_string(), value);
        }
    }

    /// A field of parameter `name`'s entry, if the agent reads that parameter.
    pub fn parameter_field(&mut self, name: &str, key: &str, value: Value) {
        if let Some(Value::Object(entry)) = self.parameters.get_mut(name) {
            entry.insert(key.to_string(), value);
        }
    }

    /// The core's parts: its top-level sections, and an entry per credential and per
    /// parameter, which views may add fields to.
    pub fn new(
        top: Map<String, Value>,
        credentials: Map<String, Value>,
        parameters: Map<String, Value>,
    ) -> Document {
        Document {
            top,
            credentials,
            parameters,
        }
    }

    pub fn finish(mut self) -> Value {
        self.top
            .insert("credentials".into(), Value::Object(self.credentials));
        self.top
            .insert("parameters".into(), Value::Object(self.parameters));
        Value::Object(self.top)
    }
}
