//! Names the key a TOML error points at, like `service[web].backend[0].weigth`.
//!
//! `toml` reports where an error is (a byte span) but not under which key,
//! so the text is read again as a tree of values with their spans, and the
//! path to the span is looked up in it. A table made by dotted keys
//! (`health.kind = "tcp"`) has no span, which leaves the path unknown.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::ConfigError;
use crate::model::rules::is_service_name;

/// A parse error as a [`ConfigError`]: the key path (`config` if unknown)
/// and the message with its line number.
pub(super) fn error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().lines().collect::<Vec<_>>().join("; ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            ConfigError::new(
                key_path(text, &text[span.clone()], span.start).unwrap_or_else(|| "config".into()),
                format!("line {line}: {message}"),
            )
        }
        None => ConfigError::new("config", message),
    }
}

/// The path of the innermost value whose span holds byte `at`, then `key`
/// if that value (or the document) is a table with this key: an unknown
/// key's error spans the key, which is in no value's span.
fn key_path(text: &str, key: &str, at: usize) -> Option<String> {
    let root: Node = toml::from_str(text).ok()?;
    let mut values = Vec::new();
    if let Node::Table(entries) = &root {
        for (name, value) in entries {
            collect(name.clone(), value, &mut values);
        }
    }
    // Of equal spans (an array of tables and its item), the later is deeper.
    let (path, node) = values
        .into_iter()
        .rev()
        .filter(|(_, value)| value.span().contains(&at))
        .min_by_key(|(_, value)| value.span().len())
        .map_or((String::new(), &root), |(path, value)| {
            (path, value.get_ref())
        });
    let has_key =
        matches!(node, Node::Table(entries) if entries.iter().any(|(name, _)| name == key));
    match (path.is_empty(), has_key) {
        (true, false) => None,
        (true, true) => Some(key.to_owned()),
        (false, true) => Some(format!("{path}.{key}")),
        (false, false) => Some(path),
    }
}

/// `value` at `path`, then everything in it. A table's
/// span covers its header and own keys, not its sub-tables, so spans
/// alone do not give the nesting.
fn collect<'a>(path: String, value: &'a Spanned<Node>, out: &mut Vec<(String, &'a Spanned<Node>)>) {
    out.push((path.clone(), value));
    match value.get_ref() {
        Node::Table(entries) => {
            for (name, child) in entries {
                collect(format!("{path}.{name}"), child, out);
            }
        }
        Node::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let label = item
                    .get_ref()
                    .name()
                    .map_or(index.to_string(), str::to_owned);
                collect(format!("{path}[{label}]"), item, out);
            }
        }
        Node::Text(_) | Node::Other => {}
    }
}

/// A TOML value with the spans of what it holds.
enum Node {
    Table(Vec<(String, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Text(String),
    Other,
}

impl Node {
    /// The `name` of a table, if a valid service name.
    fn name(&self) -> Option<&str> {
        let Node::Table(entries) = self else {
            return None;
        };
        entries
            .iter()
            .find_map(|(key, value)| match value.get_ref() {
                Node::Text(name) if key == "name" && is_service_name(name) => Some(name.as_str()),
                _ => None,
            })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_str<E>(self, text: &str) -> Result<Node, E> {
        Ok(Node::Text(text.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Table(entries))
    }
}
