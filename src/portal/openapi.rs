//! The published OpenAPI document: poem-openapi's, completed with the constraints its derive
//! cannot state ([`api::spec::Document`]), with the tags in the order of
//! [`ApiTags`](crate::api::ApiTags) (Voice first) rather than sorted by name.
use poem_openapi::Tags as _;
use serde_yaml::Value;

use crate::api::{self, ApiTags};

/// The tags in their declared order (a new tag fails the test below until it is ranked here).
const ORDER: [ApiTags; 7] = [
    ApiTags::Voice,
    ApiTags::Tenants,
    ApiTags::Routes,
    ApiTags::ApiKeys,
    ApiTags::Calls,
    ApiTags::Operations,
    ApiTags::Health,
];

/// The document as a value, tags reordered.
pub fn document(service: &api::Service) -> Value {
    let mut doc = api::spec::Document::new(service).value().clone();
    if let Some(Value::Sequence(tags)) = doc.get_mut("tags") {
        let rank = |tag: &Value| {
            let name = tag.get("name").and_then(Value::as_str).unwrap_or_default();
            ORDER.iter().position(|t| t.name() == name).unwrap_or(ORDER.len())
        };
        tags.sort_by_key(rank);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_comes_first_and_every_tag_is_ranked() {
        let doc = document(&super::super::spec_service());
        let names: Vec<&str> = doc["tags"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ORDER.iter().map(|t| t.name()).collect::<Vec<_>>());
    }
}
