//! [`Priority`]: what users type (strict) and what entries carry (lenient), and the lane
//! of an inbox each priority is delivered through (`docs/protocol.md` §5.9).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Message priority: 1 low, 2 normal, 3 high, 4 urgent. Honoured through the lanes of an inbox (see [`Priority::lane`]).
///
/// Parsed from what users type with [`FromStr`](std::str::FromStr) (`"high"`, `"3"`) or
/// [`TryFrom<u8>`], strictly; read from stream entries leniently, as the Python bus does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// 1
    Low,
    /// 2 (the default)
    #[default]
    Normal,
    /// 3
    High,
    /// 4
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// The wire value (1–4).
    pub fn as_u8(self) -> u8 {
        match self {
            Priority::Low => 1,
            Priority::Normal => 2,
            Priority::High => 3,
            Priority::Urgent => 4,
        }
    }

    /// The lane of an inbox a message of this priority is delivered through: `None` for
    /// normal (the inbox itself), else the lane's suffix (`urgent`, `high`, `low`; the key is
    /// [`keys::lane`](crate::keys::lane)). Lanes are used only where a worker created them.
    pub fn lane(self) -> Option<&'static str> {
        match self {
            Priority::Normal => None,
            other => Some(other.name()),
        }
    }

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// How a value found *in a stream entry* is read: leniently, as the Python bus reads it
    /// (anything but 1, 3, 4 or their names is normal). Values a user gives are parsed
    /// strictly, with [`FromStr`](std::str::FromStr) and [`TryFrom<u8>`].
    fn from_wire(v: &Value) -> Self {
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|v| u8::try_from(v).ok())
                .and_then(|v| Priority::try_from(v).ok())
                .unwrap_or_default(),
            Value::String(s) => s.parse().unwrap_or_default(),
            _ => Priority::Normal,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A priority that is none of `low`, `normal`, `high`, `urgent`, 1–4.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {value:?}: use low, normal, high, urgent, or 1-4 (1 is low, 4 urgent)")]
pub struct ParsePriorityError {
    value: String,
}

impl std::str::FromStr for Priority {
    type Err = ParsePriorityError;

    /// A name (`low`, `normal`, `high`, `urgent`, any case) or a number 1–4, surrounding
    /// spaces ignored.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let t = s.trim();
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(t))
            .or_else(|| {
                t.parse::<u8>()
                    .ok()
                    .and_then(|n| Priority::try_from(n).ok())
            })
            .ok_or_else(|| ParsePriorityError {
                value: s.to_owned(),
            })
    }
}

impl TryFrom<u8> for Priority {
    type Error = ParsePriorityError;

    /// 1 low, 2 normal, 3 high, 4 urgent.
    fn try_from(n: u8) -> std::result::Result<Self, Self::Error> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_u8() == n)
            .ok_or_else(|| ParsePriorityError {
                value: n.to_string(),
            })
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(self.as_u8())
    }
}

impl<'de> Deserialize<'de> for Priority {
    /// Lenient, as entries are read: anything but 1, 3, 4 or their names is normal.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Priority::from_wire(&Value::deserialize(d)?))
    }
}
