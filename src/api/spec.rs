//! The published OpenAPI document: poem-openapi's, completed with what its derive cannot say,
//! so that the document states every constraint the service enforces:
//!
//! - JSON request bodies refuse unknown fields (`deny_unknown_fields`): `additionalProperties:
//!   false` on their schemas;
//! - no path or query parameter may contain NUL ([`super::reject_nul_in_url`]): a pattern on
//!   each string parameter without one;
//! - no webhook form field name may contain NUL (the strict form parser): `propertyNames`.
use serde_yaml::{Mapping, Value};

use super::Service;
use crate::domain::input;

/// The completed document, in the key order poem-openapi writes it.
#[derive(Debug, Clone)]
pub struct Document(Value);

impl Document {
    /// Builds the document of `service`.
    pub fn new(service: &Service) -> Self {
        let mut doc: Value =
            serde_json::from_str(&service.spec()).expect("poem-openapi writes a JSON document");
        complete(&mut doc);
        Self(doc)
    }

    /// The document as a tree.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The document as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.0).expect("the document serialises")
    }

    /// The document as YAML.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.0).expect("the document serialises")
    }
}

fn key(name: &str) -> Value {
    Value::String(name.to_owned())
}

/// The schema a `$ref` names, in `components.schemas`.
fn referenced<'a>(schemas: &'a mut Mapping, schema: &Value) -> Option<&'a mut Mapping> {
    let name = schema
        .get("$ref")?
        .as_str()?
        .strip_prefix("#/components/schemas/")?;
    schemas.get_mut(name)?.as_mapping_mut()
}

fn complete(doc: &mut Value) {
    let mut closed = Vec::new();
    let mut forms = Vec::new();
    let no_nul = Value::String(input::NO_NUL.pattern.clone());
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_mapping_mut) {
        for (_, item) in paths.iter_mut() {
            let Some(item) = item.as_mapping_mut() else {
                continue;
            };
            for (_, operation) in item.iter_mut() {
                for param in operation
                    .get_mut("parameters")
                    .and_then(Value::as_sequence_mut)
                    .into_iter()
                    .flatten()
                {
                    let located = matches!(param["in"].as_str(), Some("path" | "query"));
                    if let (true, Some(schema)) = (located, param.get_mut("schema")) {
                        if schema["type"].as_str() == Some("string") && schema.get("pattern").is_none() {
                            if let Some(schema) = schema.as_mapping_mut() {
                                schema.insert(key("pattern"), no_nul.clone());
                            }
                        }
                    }
                }
                let Some(content) = operation
                    .get("requestBody")
                    .and_then(|b| b.get("content"))
                    .and_then(Value::as_mapping)
                else {
                    continue;
                };
                for (media_type, body) in content {
                    let Some(schema) = body.get("schema") else {
                        continue;
                    };
                    match media_type.as_str() {
                        Some(t) if t.starts_with("application/json") => closed.push(schema.clone()),
                        Some("application/x-www-form-urlencoded") => forms.push(schema.clone()),
                        _ => {}
                    }
                }
            }
        }
    }
    let Some(schemas) = doc
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Value::as_mapping_mut)
    else {
        return;
    };
    for schema in &closed {
        if let Some(schema) = referenced(schemas, schema) {
            schema.insert(key("additionalProperties"), Value::Bool(false));
        }
    }
    for schema in &forms {
        if let Some(schema) = referenced(schemas, schema) {
            let mut names = Mapping::new();
            names.insert(key("pattern"), no_nul.clone());
            schema.insert(key("propertyNames"), Value::Mapping(names));
        }
    }
}
