//! `PATCH` of a service: a JSON merge patch (RFC 7396) over its
//! configuration form, whose keys must be the form's.

use serde::{
    de::{self, Deserializer, Visitor},
    forward_to_deserialize_any, Deserialize,
};
use serde_json::Value;

use super::ApiError;
use crate::config::{HealthConfig, PersistenceConfig, ServiceConfig};

/// RFC 7396: objects merge key by key, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let object = target.as_object_mut().expect("made an object");
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(&key);
                } else {
                    merge(object.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

/// Refuses a key of the patch that is no key of the service's form, nor of
/// its `health` or `persistence` (which merge key by key): the merge alone
/// would pass over an unknown key set to null.
pub fn known_keys(patch: &Value) -> Result<(), ApiError> {
    let Value::Object(fields) = patch else {
        return Ok(());
    };
    known_in(fields, field_names::<ServiceConfig>(), "")?;
    for (key, names) in [
        ("health", field_names::<HealthConfig>()),
        ("persistence", field_names::<PersistenceConfig>()),
    ] {
        if let Some(Value::Object(inner)) = fields.get(key) {
            known_in(inner, names, &format!("{key}."))?;
        }
    }
    Ok(())
}

fn known_in(
    fields: &serde_json::Map<String, Value>,
    names: &[&str],
    prefix: &str,
) -> Result<(), ApiError> {
    match fields.keys().find(|key| !names.contains(&key.as_str())) {
        Some(key) => Err(ApiError::bad_request(
            format!(
                "malformed service: unknown field `{key}`, expected one of {}",
                names
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(format!("{prefix}{key}")),
        )),
        None => Ok(()),
    }
}

/// The keys a struct deserializes from (serde's own list, aliases
/// included), read by a deserializer that only asks for them.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields(&'static [&'static str]);

    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = de::value::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("only the field names were asked for"))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = Fields(&[]);
    let _ = T::deserialize(&mut fields);
    fields.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge(&mut doc, json!({"a": [3], "b": {"c": 1}}));
        assert_eq!(doc, json!({"a": [3], "b": {"c": 1}}));
    }

    #[test]
    fn a_patch_names_only_keys_of_the_form_null_or_not() {
        for known in [
            json!({"mode": "nat", "health": null, "backends": []}),
            json!({"health": {"kind": "http", "path": null, "type": "A"}}),
            json!({"persistence": {"timeout": "10m", "netmask": null}}),
            json!([1]),
        ] {
            assert_eq!(known_keys(&known), Ok(()), "{known}");
        }
        for (patch, field) in [
            (json!({"": null}), ""),
            (json!({"mode": "nat", "weight": null}), "weight"),
            (
                json!({"health": {"kind": "tcp", "retries": null}}),
                "health.retries",
            ),
            (json!({"persistence": {"expire": 1}}), "persistence.expire"),
        ] {
            let e = known_keys(&patch).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.field.as_deref()),
                (400, Some(field)),
                "{patch}"
            );
            assert!(
                e.error.starts_with("malformed service: unknown field"),
                "{}",
                e.error
            );
        }
    }
}
