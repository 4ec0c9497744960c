//! Small helpers for the few Redis commands this crate sends itself (`SCAN`, `XINFO STREAM`).
//! Nothing here panics on an unexpected reply: odd shapes become `None` / `null`.

use std::time::Duration;

use redis::Value;
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

/// A string from a bulk, simple or verbatim string.
pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// Key/value pairs from a RESP3 map or a flat RESP2 array.
pub(crate) fn as_pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| as_string(k).map(|k| (k, v)))
            .collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|c| as_string(&c[0]).map(|k| (k, &c[1])))
            .collect(),
        _ => None,
    }
}

/// The id of a stream entry reply (`[id, [field, value, …]]`).
pub(crate) fn entry_id(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items.first().and_then(as_string),
        _ => None,
    }
}

/// A generic conversion for display.
pub(crate) fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Int(i) => Json::from(*i),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Array(items) | Value::Set(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => {
            let mut m = Map::new();
            for (k, v) in pairs {
                m.insert(
                    as_string(k).unwrap_or_else(|| to_json(k).to_string()),
                    to_json(v),
                );
            }
            Json::Object(m)
        }
        other => as_string(other).map(Json::String).unwrap_or(Json::Null),
    }
}

/// A connection of our own (timeouts set), for the commands the bus does not offer.
pub(crate) async fn connect(
    client: &redis::Client,
    masked_url: &str,
) -> Result<redis::aio::MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|source| Error::Connect {
            url: masked_url.to_owned(),
            source,
        })
}

/// Agents that have an inbox, found with `SCAN … MATCH agent:*:inbox TYPE stream` (never `KEYS`),
/// sorted and deduplicated.
pub(crate) async fn discover_agents(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut agents = std::collections::BTreeSet::new();
    // Bounded: at most 100k SCAN round trips.
    for _ in 0..100_000 {
        let v: Value = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("agent:*:inbox")
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream")
            .query_async(conn)
            .await
            .map_err(|source| Error::Redis {
                command: "SCAN",
                source,
            })?;
        let Value::Array(parts) = &v else {
            break;
        };
        let next = parts
            .first()
            .and_then(as_string)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(Value::Array(keys)) = parts.get(1) {
            for k in keys.iter().filter_map(as_string) {
                if let Some(agent) = k
                    .strip_prefix("agent:")
                    .and_then(|r| r.strip_suffix(":inbox"))
                    && fabric_worker::keys::validate_agent(agent).is_ok()
                {
                    agents.insert(agent.to_owned());
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(agents.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_odd_replies_without_panicking() {
        let v = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            Value::BulkString(b"first-entry".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![]),
            ]),
        ]);
        let pairs = as_pairs(&v).unwrap();
        assert_eq!(pairs[0].0, "length");
        assert_eq!(entry_id(pairs[1].1).as_deref(), Some("1-0"));
        assert!(as_pairs(&Value::Array(vec![Value::Int(1)])).is_none());
        assert_eq!(entry_id(&Value::Nil), None);
        assert_eq!(to_json(&Value::Double(f64::NAN)), Json::Null);
        assert_eq!(to_json(&Value::Int(3)), Json::from(3));
    }
}
