//! Field types of the request bodies: a string whose published schema is the domain's rule for
//! its kind of field ([`domain::input`]), and optional fields that refuse `null`.
//!
//! The schema only documents: the value reaches the domain as sent, which enforces the same
//! rule (422), so a constraint is declared exactly where, and as, it is enforced. Parsing is
//! strict on types: a number or boolean is not taken for a string.
use std::{borrow::Cow, fmt, marker::PhantomData};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::domain::input::{self as rules, Rule};

/// A kind of field and its rule.
pub trait Field: Send + Sync + 'static {
    /// The lengths and pattern the domain enforces for this field.
    fn rule() -> &'static Rule;
}

macro_rules! fields {
    ($($(#[doc = $doc:literal])* $name:ident => $rule:path;)*) => {
        $(
            $(#[doc = $doc])*
            pub enum $name {}

            impl Field for $name {
                fn rule() -> &'static Rule {
                    &$rule
                }
            }
        )*
    };
}

fields! {
    /// A name or label: 1 to 200 printable characters once trimmed.
    Label => rules::LABEL;
    /// A `<Say>` message.
    Message => rules::MESSAGE;
    /// An auth token or shared key.
    Secret => rules::SECRET;
    /// A Twilio account SID.
    AccountSid => rules::ACCOUNT_SID;
    /// A Standard Webhooks secret.
    WebhookSecret => rules::WEBHOOK_SECRET;
    /// A phone number, formatting allowed.
    Phone => rules::PHONE;
    /// An http(s) URL.
    HttpUrl => rules::HTTP_URL;
    /// A ws(s) URL.
    WsUrl => rules::WS_URL;
}

/// A string field of kind `F`.
pub struct Checked<F>(pub String, PhantomData<fn() -> F>);

impl<F> Checked<F> {
    /// Wraps a value (it is checked where it is used).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), PhantomData)
    }

    /// The value as sent.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<F> Clone for Checked<F> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<F> fmt::Debug for Checked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The schema a rule publishes.
pub fn schema(rule: &Rule) -> MetaSchema {
    MetaSchema {
        min_length: rule.min_length,
        max_length: rule.max_length,
        pattern: Some(rule.pattern.clone()),
        ..MetaSchema::new("string")
    }
}

impl<F: Field> Type for Checked<F> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(schema(F::rule())))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<F: Field> ParseFromJSON for Checked<F> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self::new(s)),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl<F: Field> ToJSON for Checked<F> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// An optional field that may be left out but not set to `null`: `null` is refused (400)
/// rather than read as absent, as the schema (not nullable) says.
#[derive(Debug, Clone)]
pub struct NonNull<T>(pub Option<T>);

impl<T: Type> Type for NonNull<T> {
    const IS_REQUIRED: bool = false;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref().and_then(Type::as_raw_value)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(v) => v.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for NonNull<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            None => Ok(Self(None)),
            Some(Value::Null) => Err(ParseError::custom(
                "null is not allowed here: leave the field out instead",
            )),
            Some(v) => Ok(Self(Some(
                T::parse_from_json(Some(v)).map_err(ParseError::propagate)?,
            ))),
        }
    }
}

impl<T: ToJSON> ToJSON for NonNull<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.as_ref().and_then(ToJSON::to_json)
    }
}

impl<T> NonNull<T> {
    /// The value, `None` when left out.
    pub fn into_option(self) -> Option<T> {
        self.0
    }
}

impl<F> NonNull<Checked<F>> {
    /// The string, `None` when left out.
    pub fn into_string(self) -> Option<String> {
        self.0.map(Checked::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_only() {
        assert!(Checked::<Label>::parse_from_json(Some(json!("a"))).is_ok());
        assert!(Checked::<Label>::parse_from_json(Some(json!(5))).is_err());
        assert!(Checked::<Label>::parse_from_json(Some(json!(true))).is_err());
        assert!(Checked::<Label>::parse_from_json(None).is_err());
    }

    #[test]
    fn non_null_tells_absent_from_null() {
        assert!(NonNull::<bool>::parse_from_json(None).unwrap().0.is_none());
        assert!(NonNull::<bool>::parse_from_json(Some(Value::Null)).is_err());
        assert_eq!(
            NonNull::<bool>::parse_from_json(Some(json!(true))).unwrap().0,
            Some(true)
        );
    }

    #[test]
    fn the_schema_is_the_rule() {
        let MetaSchemaRef::Inline(s) = Checked::<Label>::schema_ref() else {
            panic!("inline schema")
        };
        assert_eq!(s.min_length, Some(1));
        assert_eq!(s.pattern.as_deref(), Some(rules::LABEL.pattern.as_str()));
    }
}
