//! Reading many entries or members to find one: the helpers of [`Bus::message`](super::Bus::message)
//! and of the retry commands (`ZSCAN … MATCH` over the retry set, bounded walks of streams).

use crate::broker::{Conn, RawEntry, wire};
use crate::error::{Error, Result};

use super::lookup::MESSAGE_ID_SCAN_LIMIT;

/// A sorted-set member (retry or schedule) as `fabric_schedule_retry` writes it.
#[derive(serde::Deserialize)]
pub(super) struct Member {
    pub(super) fields: Vec<String>,
    #[serde(default)]
    pub(super) from: Option<String>,
    #[serde(default)]
    pub(super) lane: Option<String>,
    #[serde(default)]
    pub(super) id: Option<String>,
}

impl Member {
    pub(super) fn entry(&self, id: String) -> RawEntry {
        RawEntry {
            id,
            fields: self
                .fields
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone().into_bytes())))
                .collect(),
        }
    }
}

/// The entry `id` of `stream`, if it is there.
pub(super) async fn range_one(conn: &mut Conn, stream: &str, id: &str) -> Result<Option<RawEntry>> {
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await
        .map_err(|e| Error::redis("XRANGE", stream, e))?;
    Ok(wire::parse_entries(&v)?.into_iter().find(|e| e.id == id))
}

/// The newest entry of `stream` (among its newest [`MESSAGE_ID_SCAN_LIMIT`]) for which
/// `want` holds.
pub(super) async fn newest_where(
    conn: &mut Conn,
    stream: &str,
    want: &impl Fn(&RawEntry) -> bool,
) -> Result<Option<RawEntry>> {
    let mut end = "+".to_owned();
    for _ in 0..MESSAGE_ID_SCAN_LIMIT.div_ceil(1000) {
        let v: redis::Value = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| Error::redis("XREVRANGE", stream, e))?;
        let entries = wire::parse_entries(&v)?;
        let full = entries.len() == 1000;
        let next = entries.last().map(|e| format!("({}", e.id));
        if let Some(found) = entries.into_iter().find(|e| want(e)) {
            return Ok(Some(found));
        }
        match next {
            Some(n) if full => end = n,
            _ => break,
        }
    }
    Ok(None)
}

/// Members of the sorted set `key` matching the glob `pattern`, with their scores
/// (`ZSCAN … MATCH`, at most a million members looked at). Members that are not JSON
/// members are skipped.
pub(super) async fn zscan(
    conn: &mut Conn,
    key: &str,
    pattern: &str,
) -> Result<Vec<(Member, String, f64)>> {
    let mut cursor = "0".to_owned();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let v: redis::Value = redis::cmd("ZSCAN")
            .arg(key)
            .arg(&cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| Error::redis("ZSCAN", key, e))?;
        let parts = wire::as_array(&v).unwrap_or(&[]);
        cursor = parts
            .first()
            .and_then(wire::as_string)
            .unwrap_or_else(|| "0".into());
        let items = parts.get(1).and_then(wire::as_array).unwrap_or(&[]);
        for pair in items.chunks(2) {
            let (Some(m), Some(s)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let Some(text) = wire::as_string(m) else {
                continue;
            };
            let score = wire::as_string(s)
                .and_then(|s| s.parse::<f64>().ok())
                .or(match s {
                    redis::Value::Double(d) => Some(*d),
                    _ => None,
                })
                .unwrap_or(0.0);
            if let Ok(member) = serde_json::from_str::<Member>(&text) {
                out.push((member, text, score));
            }
        }
        if cursor == "0" {
            break;
        }
    }
    Ok(out)
}

/// A score (ms since the epoch) as a whole number of ms.
pub(super) fn score_ms(score: f64) -> u64 {
    if score.is_finite() && score > 0.0 {
        // A due time fits easily; the conversion through text is exact for integers.
        format!("{score:.0}").parse().unwrap_or(0)
    } else {
        0
    }
}

/// `s` with the glob characters of `MATCH` escaped.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether stream id `a` ≤ `b` (ms, then sequence, as numbers).
pub(super) fn id_le(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) <= parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_ids_as_numbers() {
        assert!(id_le("9-0", "10-0"));
        assert!(id_le("10-2", "10-10"));
        assert!(!id_le("10-11", "10-10"));
        assert!(id_le("5-1", "5-1"));
    }

    #[test]
    fn escapes_globs() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn scores_to_ms() {
        assert_eq!(score_ms(1_700_000_000_123.0), 1_700_000_000_123);
        assert_eq!(score_ms(f64::NAN), 0);
        assert_eq!(score_ms(-5.0), 0);
    }
}
