//! Reading settings from environment variables, with one error text per kind of mistake.
//!
//! The reader takes a lookup function instead of reading the process environment
//! directly, so that the rules are unit-tested without touching the (shared) environment.

use std::time::Duration;

use crate::error::{Error, Result};

/// `REDIS_URL`, or this default when it is unset or blank.
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A source of settings: the process environment, or a map in tests.
pub(crate) struct Vars<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

/// The process environment.
pub(crate) fn process() -> Vars<impl Fn(&str) -> Option<String>> {
    Vars::new(|name: &str| std::env::var(name).ok())
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub(crate) fn new(lookup: F) -> Self {
        Vars { lookup }
    }

    /// The trimmed value, `None` when unset or blank.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A comma-separated list (empty items dropped).
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.string(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A whole number.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                Error::Config(format!(
                    "{name}={v:?} is not a whole number (expected e.g. {name}=10)"
                ))
            }),
        }
    }

    /// A whole number that fits a `usize`.
    pub(crate) fn usize(&self, name: &str) -> Result<Option<usize>> {
        self.u64(name)?
            .map(|v| {
                usize::try_from(v)
                    .map_err(|_| Error::Config(format!("{name}={v} is too large for this machine")))
            })
            .transpose()
    }

    /// A whole number that fits a `u32`.
    pub(crate) fn u32(&self, name: &str) -> Result<Option<u32>> {
        self.u64(name)?
            .map(|v| {
                u32::try_from(v).map_err(|_| {
                    Error::Config(format!("{name}={v} is too large (at most {})", u32::MAX))
                })
            })
            .transpose()
    }

    /// A duration given in whole milliseconds (`…_MS` variables).
    pub(crate) fn millis(&self, name: &str) -> Result<Option<Duration>> {
        Ok(self.u64(name)?.map(Duration::from_millis))
    }

    /// A boolean: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case.
    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(Error::Config(format!(
                    "{name}={v:?} is not a boolean (expected true or false)"
                ))),
            },
        }
    }

    /// `REDIS_URL`, or [`DEFAULT_REDIS_URL`].
    pub(crate) fn redis_url(&self) -> String {
        self.string("REDIS_URL")
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
    }
}

#[cfg(test)]
pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Vars<impl Fn(&str) -> Option<String>> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Vars::new(move |name: &str| map.get(name).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parsed_or_refused_with_the_variable_named() {
        let v = from_pairs(&[
            ("N", " 12 "),
            ("BAD", "twelve"),
            ("NEG", "-1"),
            ("BLANK", "  "),
            ("BIG", "4294967296"),
            ("LIST", "a, b,,c "),
            ("T", "Yes"),
            ("F", "off"),
            ("B", "maybe"),
        ]);
        assert_eq!(v.u64("N").unwrap(), Some(12));
        assert_eq!(v.u64("UNSET").unwrap(), None);
        assert_eq!(v.u64("BLANK").unwrap(), None);
        let e = v.u64("BAD").unwrap_err().to_string();
        assert!(e.contains("BAD=\"twelve\" is not a whole number"), "{e}");
        assert!(v.u64("NEG").is_err());
        let e = v.u32("BIG").unwrap_err().to_string();
        assert!(e.contains("BIG=4294967296 is too large"), "{e}");
        assert_eq!(v.millis("N").unwrap(), Some(Duration::from_millis(12)));
        assert_eq!(v.list("LIST"), ["a", "b", "c"]);
        assert!(v.list("UNSET").is_empty());
        assert_eq!(v.bool("T").unwrap(), Some(true));
        assert_eq!(v.bool("F").unwrap(), Some(false));
        let e = v.bool("B").unwrap_err().to_string();
        assert!(e.contains("B=\"maybe\" is not a boolean"), "{e}");
        assert_eq!(v.redis_url(), DEFAULT_REDIS_URL);
        assert_eq!(
            from_pairs(&[("REDIS_URL", "redis://x:1")]).redis_url(),
            "redis://x:1"
        );
    }
}
