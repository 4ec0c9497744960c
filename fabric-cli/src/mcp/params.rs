//! Typed tool arguments: each type here carries one rule, and gives both the JSON schema
//! the tool lists and the check its argument gets, so the two cannot disagree.
//!
//! A tool's parameter struct is made of these (`#[derive(Deserialize, JsonSchema)]` with
//! `deny_unknown_fields`): its schema (with `additionalProperties: false`), the arguments
//! it allows and their parsing all come from that one struct ([`parse`], [`input_schema`]).
//! The identifier rules are the library's (`fabric_worker::keys`).

use std::borrow::Cow;
use std::str::FromStr;

use fabric_worker::{Priority, keys};
use rmcp::model::JsonObject;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::tools::ToolError;

/// Largest serialized `payload` / `message` accepted (1 MiB).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Parses the arguments of `tool` into its parameter struct. An error names the argument
/// and says what was expected and what came.
pub(crate) fn parse<P: DeserializeOwned>(tool: &str, args: &JsonObject) -> Result<P, ToolError> {
    let value = Value::Object(args.clone());
    serde_path_to_error::deserialize::<_, P>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field ") {
            // "`x`, expected one of `a`, `b`": serde lists what the tool takes.
            let rest = rest.replacen(", expected one of ", "; it takes ", 1);
            ToolError(format!("unknown argument {rest} (tool {tool})"))
        } else if let Some(field) = inner.strip_prefix("missing field ") {
            ToolError(format!("missing required argument {field} of {tool}"))
        } else if path.is_empty() || path == "." {
            ToolError(format!("invalid arguments of {tool}: {inner}"))
        } else {
            ToolError(format!("invalid argument `{path}` of {tool}: {inner}"))
        }
    })
}

/// The input schema of a parameter struct, as MCP lists it: one self-contained object
/// schema (sub-schemas inlined, no `$schema` or `title`).
pub(crate) fn input_schema<P: JsonSchema>() -> JsonObject {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let schema = generator.into_root_schema_for::<P>();
    let mut obj = match schema.to_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.remove("title");
    obj
}

/// `"a string (\"x\")"`, `"an integer (7)"`: what a wrong argument was.
pub(crate) fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = v.to_string();
    if text.len() > 60 {
        let mut cut = 60;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} ({text})")
}

fn expected<E: serde::de::Error>(what: &str, got: &Value) -> E {
    E::custom(format!("expected {what}, got {}", describe(got)))
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        other => Err(expected("a string", &other)),
    }
}

/// Declares a string argument checked by a rule of the library.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path, $schema:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = string(d)?;
                $check(&s).map_err(D::Error::custom)?;
                Ok($name(s))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

checked_string!(
    /// An agent id (`fabric_worker::keys::validate_agent`).
    AgentId,
    keys::validate_agent,
    json_schema!({"type": "string", "pattern": keys::AGENT_ID_PATTERN, "maxLength": keys::MAX_AGENT_LEN})
);
checked_string!(
    /// A message type (`fabric_worker::keys::validate_message_type`).
    MessageType,
    keys::validate_message_type,
    json_schema!({"type": "string", "pattern": keys::MESSAGE_TYPE_PATTERN, "maxLength": keys::MAX_MESSAGE_TYPE_LEN})
);
checked_string!(
    /// A consumer group name.
    GroupName,
    keys::validate_group,
    json_schema!({"type": "string", "minLength": 1, "maxLength": keys::MAX_GROUP_LEN})
);
checked_string!(
    /// A Pub/Sub topic.
    TopicName,
    keys::validate_topic,
    json_schema!({"type": "string", "minLength": 1, "maxLength": keys::MAX_KEY_LEN})
);
checked_string!(
    /// A stream key (a `reply_to`).
    StreamKey,
    keys::validate_stream_key,
    json_schema!({"type": "string", "minLength": 1, "maxLength": keys::MAX_KEY_LEN})
);
checked_string!(
    /// A stream entry id (`fabric_worker::keys::validate_stream_id`).
    StreamIdArg,
    keys::validate_stream_id,
    json_schema!({"type": "string", "pattern": keys::STREAM_ID_PATTERN})
);
checked_string!(
    /// An idempotency key: 1–200 characters, no control characters.
    IdempotencyKey,
    check_idempotency_key,
    json_schema!({"type": "string", "minLength": 1, "maxLength": fabric_worker::bus::MAX_IDEMPOTENCY_KEY_LEN})
);
checked_string!(
    /// A correlation id: 1–256 characters.
    CorrelationId,
    check_correlation_id,
    json_schema!({"type": "string", "minLength": 1, "maxLength": 256})
);

fn check_idempotency_key(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > fabric_worker::bus::MAX_IDEMPOTENCY_KEY_LEN
        || s.chars().any(char::is_control)
    {
        return Err(format!(
            "{s:?} must be 1-{} characters without control characters",
            fabric_worker::bus::MAX_IDEMPOTENCY_KEY_LEN
        ));
    }
    Ok(())
}

fn check_correlation_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 256 {
        return Err(format!("{s:?} must be 1-256 characters"));
    }
    Ok(())
}

/// Most ids one `fabric_message_acknowledge` call takes.
pub(crate) const MAX_ACK_IDS: usize = 1000;

/// 1 to [`MAX_ACK_IDS`] stream entry ids (`fabric_worker::keys::validate_stream_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamIds(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for StreamIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let Value::Array(items) = &v else {
            return Err(expected("an array of strings", &v));
        };
        if items.is_empty() {
            return Err(D::Error::custom("is empty: pass at least one id"));
        }
        if items.len() > MAX_ACK_IDS {
            return Err(D::Error::custom(format!(
                "has {} items; at most {MAX_ACK_IDS} are allowed per call",
                items.len()
            )));
        }
        items
            .iter()
            .map(|i| match i {
                Value::String(s) => keys::split_received_id(s).map(|_| s.clone()).map_err(|e| {
                    D::Error::custom(format!(
                        "{e} (the `_stream_id` of a received message, not its msg: id)"
                    ))
                }),
                other => Err(expected("an array of strings", other)),
            })
            .collect::<Result<_, _>>()
            .map(StreamIds)
    }
}

impl JsonSchema for StreamIds {
    fn schema_name() -> Cow<'static, str> {
        "StreamIds".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ACK_IDS,
            "items": {"type": "string", "pattern": keys::RECEIVED_ID_PATTERN}
        })
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounded<const MIN: u64, const MAX: u64>(pub(crate) u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let what = format!("an integer from {MIN} to {MAX}");
        let n = match &v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9.0e15)
                    .and_then(|f| format!("{f:.0}").parse().ok())
            }),
            // Some hosts send every argument as a string: "5" is 5 (and "-1" is out of
            // range, as -1 is), the same rule for both.
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            let negative = match &v {
                Value::String(s) => s.trim().parse::<i64>().ok(),
                other => other.as_i64(),
            };
            return match negative {
                Some(neg) => Err(D::Error::custom(format!(
                    "{neg} is out of range; it must be from {MIN} to {MAX}"
                ))),
                None => Err(expected(&what, &v)),
            };
        };
        if !(MIN..=MAX).contains(&n) {
            return Err(D::Error::custom(format!(
                "{n} is out of range; it must be from {MIN} to {MAX}"
            )));
        }
        Ok(Bounded(n))
    }
}

impl<const MIN: u64, const MAX: u64> JsonSchema for Bounded<MIN, MAX> {
    fn schema_name() -> Cow<'static, str> {
        format!("Integer_{MIN}_to_{MAX}").into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": MIN, "maximum": MAX})
    }
}

/// `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flag(pub(crate) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            // As with numbers: "true" and "false" from hosts that send strings.
            Value::String(s) if s == "true" => Ok(Flag(true)),
            Value::String(s) if s == "false" => Ok(Flag(false)),
            other => Err(expected("true or false", &other)),
        }
    }
}

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "boolean"})
    }
}

/// A JSON object of at most [`MAX_PAYLOAD_BYTES`] serialized.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JsonObjectArg(pub(crate) Map<String, Value>);

impl<'de> Deserialize<'de> for JsonObjectArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(m) => {
                let size = serde_json::to_vec(&m)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_PAYLOAD_BYTES {
                    return Err(D::Error::custom(format!(
                        "too large: {size} bytes serialized, at most {MAX_PAYLOAD_BYTES} bytes (1 MiB) are allowed; store big data elsewhere and send a reference"
                    )));
                }
                Ok(JsonObjectArg(m))
            }
            other @ Value::String(_) => {
                let looks_like_json = other
                    .as_str()
                    .is_some_and(|s| serde_json::from_str::<Map<String, Value>>(s).is_ok());
                let hint = if looks_like_json {
                    " (it looks like JSON text: pass the object itself, not a string)"
                } else {
                    ""
                };
                Err(D::Error::custom(format!(
                    "expected a JSON object, got {}{hint}",
                    describe(&other)
                )))
            }
            other => Err(expected("a JSON object", &other)),
        }
    }
}

impl JsonSchema for JsonObjectArg {
    fn schema_name() -> Cow<'static, str> {
        "JsonObject".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object"})
    }
}

/// Which of your streams a receive or acknowledge is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SourceArg {
    /// Messages sent to you.
    #[default]
    Inbox,
    /// Replies to what you sent (your results stream).
    Replies,
}

impl SourceArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SourceArg::Inbox => "inbox",
            SourceArg::Replies => "replies",
        }
    }

    pub(crate) fn source(self) -> fabric_worker::bus::Source {
        match self {
            SourceArg::Inbox => fabric_worker::bus::Source::Inbox,
            SourceArg::Replies => fabric_worker::bus::Source::Results,
        }
    }
}

impl<'de> Deserialize<'de> for SourceArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "inbox" => Ok(SourceArg::Inbox),
            Value::String(s) if s == "replies" => Ok(SourceArg::Replies),
            other => Err(expected("\"inbox\" or \"replies\"", &other)),
        }
    }
}

impl JsonSchema for SourceArg {
    fn schema_name() -> Cow<'static, str> {
        "Source".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "enum": ["inbox", "replies"], "default": "inbox"})
    }
}

/// A priority: a name or 1–4, parsed by the library's one rule (`Priority: FromStr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PriorityArg(pub(crate) Priority);

impl<'de> Deserialize<'de> for PriorityArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Priority::from_str(&s)
                .map(PriorityArg)
                .map_err(D::Error::custom),
            // The same rule for 4 and "4": the library's parser.
            Value::Number(n) => n
                .to_string()
                .parse()
                .map(PriorityArg)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "{}, got {}",
                "expected \"low\", \"normal\", \"high\", \"urgent\" or an integer from 1 to 4",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for PriorityArg {
    fn schema_name() -> Cow<'static, str> {
        "Priority".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Priority::ALL.iter().map(|p| p.name()).collect();
        json_schema!({
            "anyOf": [
                {"type": "string", "enum": names},
                {"type": "integer", "minimum": 1, "maximum": 4}
            ],
            "default": "normal"
        })
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
