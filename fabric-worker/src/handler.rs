//! What `#[handler]` functions take and return: [`HandlerArg`], [`IntoHandlerResult`] and
//! [`HandlerError`].
//!
//! The attribute decides what each argument receives by its *type*, through [`HandlerArg`]:
//! [`Context`] receives the context (under any name or alias), any other type implementing
//! `serde::Deserialize` receives the decoded payload (whatever it is called, even
//! `Context`). At most one of each.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::Context;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's failure, with a retry decision.
///
/// `?` converts any `std::error::Error` into a retryable `HandlerError`; use
/// [`HandlerError::permanent`] for failures that no retry can fix (the message goes
/// straight to dead letters).
///
/// ```
/// use fabric_worker::HandlerError;
/// fn check(pr_id: &str) -> Result<u64, HandlerError> {
///     let n: u64 = pr_id.parse()?; // a ParseIntError: retryable by default
///     if n == 0 {
///         return Err(HandlerError::permanent("pr_id 0 does not exist"));
///     }
///     Ok(n)
/// }
/// assert!(check("0").unwrap_err().is_permanent());
/// ```
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl HandlerError {
    /// A retryable error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: false,
            retry_after: None,
            source: None,
        }
    }

    /// A retryable error wrapping `err`.
    pub fn retry(err: impl Into<BoxError>) -> Self {
        let err = err.into();
        HandlerError {
            message: err.to_string(),
            permanent: false,
            retry_after: None,
            source: Some(err),
        }
    }

    /// A permanent error: no more attempts, the message goes to dead letters.
    pub fn permanent(err: impl Into<BoxError>) -> Self {
        HandlerError {
            permanent: true,
            ..HandlerError::retry(err)
        }
    }

    /// Asks for the next attempt no sooner than `delay` (instead of the backoff's delay).
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The requested delay before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The wrapped error, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::retry(e)
    }
}

/// What running a handler produced (used by generated code; not a stable API).
#[derive(Debug)]
#[doc(hidden)]
pub enum Outcome {
    /// Success; the value is the reply payload (`Null` for `()`).
    Reply(Value),
    /// The handler failed.
    Failed(HandlerError),
    /// The payload did not deserialize into the handler's argument type.
    BadPayload(String),
}

/// Return types a `#[handler]` function may have: `()`, or `Result<T, E>` where `T`
/// serializes (it becomes the reply's payload) and `E` converts into [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid #[handler] return type",
    note = "return `()` or `Result<T, E>` where `T: Serialize` and `E: Into<HandlerError>`"
)]
pub trait IntoHandlerResult {
    #[doc(hidden)]
    fn into_outcome(self) -> Outcome;
}

impl IntoHandlerResult for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Reply(Value::Null)
    }
}

impl<T: Serialize, E: Into<HandlerError>> IntoHandlerResult for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(v) => match serde_json::to_value(v) {
                Ok(v) => Outcome::Reply(v),
                Err(e) => Outcome::Failed(HandlerError::permanent(format!(
                    "the handler's return value cannot be encoded as JSON: {e}"
                ))),
            },
            Err(e) => Outcome::Failed(e.into()),
        }
    }
}

/// The future a registered handler returns (used by generated code; not a stable API).
#[doc(hidden)]
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// What a delivered message offers its handler's arguments (used by generated code).
#[doc(hidden)]
#[derive(Debug)]
pub struct Parts {
    ctx: Context,
}

impl Parts {
    /// The context of one delivery (its message holds the payload).
    #[doc(hidden)]
    pub fn new(ctx: Context) -> Self {
        Parts { ctx }
    }
}

/// Which kind of argument a type is (used by generated code).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// The [`Context`].
    Context,
    /// The payload.
    Payload,
}

/// The types a `#[handler]` function's arguments may have: [`Context`], and payload types
/// (anything implementing `serde::Deserialize`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a #[handler] function",
    label = "neither `fabric_worker::Context` nor a payload type",
    note = "a #[handler] takes the `fabric_worker::Context` and/or one payload argument whose type implements `serde::Deserialize` (add `#[derive(Deserialize)]`)"
)]
pub trait HandlerArg: Sized {
    #[doc(hidden)]
    const KIND: ArgKind;

    #[doc(hidden)]
    fn from_parts(parts: &mut Parts) -> Result<Self, Outcome>;
}

impl HandlerArg for Context {
    const KIND: ArgKind = ArgKind::Context;

    fn from_parts(parts: &mut Parts) -> Result<Self, Outcome> {
        Ok(parts.ctx.clone())
    }
}

impl<T: DeserializeOwned> HandlerArg for T {
    const KIND: ArgKind = ArgKind::Payload;

    fn from_parts(parts: &mut Parts) -> Result<Self, Outcome> {
        // Straight from the entry's JSON text when there is one (no JSON tree built first);
        // else from the payload in place (no copy of the tree).
        let decoded = match parts.ctx.raw_payload() {
            Some(raw) => serde_json::from_str(raw),
            None => T::deserialize(parts.ctx.payload()),
        };
        decoded.map_err(|e| {
            Outcome::BadPayload(format!(
                "payload does not match the handler's argument type {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// Fails compilation when a handler takes two contexts or two payloads (used by
/// generated code, in a `const`).
#[doc(hidden)]
pub const fn check_args(kinds: &[ArgKind]) {
    let mut contexts = 0;
    let mut payloads = 0;
    let mut i = 0;
    while i < kinds.len() {
        match kinds[i] {
            ArgKind::Context => contexts += 1,
            ArgKind::Payload => payloads += 1,
        }
        i += 1;
    }
    assert!(
        contexts <= 1,
        "a #[handler] function takes at most one `Context` argument"
    );
    assert!(
        payloads <= 1,
        "a #[handler] function takes at most one payload argument; combine the fields into a single type"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_defaults_to_retry() {
        fn f() -> Result<(), HandlerError> {
            let _: u8 = "x".parse()?;
            Ok(())
        }
        let e = f().unwrap_err();
        assert!(!e.is_permanent());
        assert!(e.message().contains("invalid digit"));
        assert!(e.source().is_some());
    }

    #[test]
    fn outcomes() {
        assert!(matches!(().into_outcome(), Outcome::Reply(Value::Null)));
        let r: Result<u8, HandlerError> = Ok(3);
        assert!(matches!(r.into_outcome(), Outcome::Reply(v) if v == 3));
        let r: Result<u8, HandlerError> = Err(HandlerError::permanent("no"));
        assert!(matches!(r.into_outcome(), Outcome::Failed(e) if e.is_permanent()));
        let e = HandlerError::new("slow down").with_retry_after(Duration::from_secs(3));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.to_string(), "slow down");
    }
}

#[cfg(test)]
mod read_payload_tests {
    use std::sync::Arc;

    use serde_json::Value;

    use crate::broker::RawEntry;
    use crate::bus::Bus;
    use crate::context::{Context, ServedStream};
    use crate::handler::{HandlerArg, Outcome, Parts};

    fn read(data: &str) -> Context {
        let entry = RawEntry {
            id: "5-0".into(),
            fields: vec![("data".into(), data.as_bytes().to_vec())],
        };
        let served = Arc::new(ServedStream {
            agent: "coder".into(),
            stream: "agent:coder:inbox".into(),
            group: "coder_workers".into(),
            consumer: "c".into(),
        });
        let head = entry.decode_head(false).expect("a valid envelope");
        Context::new(served, entry.id, 1, 3, 1, head, Bus::offline())
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Review {
        pr_id: String,
        #[serde(default)]
        files: Vec<String>,
    }

    #[test]
    fn a_read_payload_is_decoded_from_its_text_for_a_typed_argument_and_on_demand_as_json() {
        let ctx = read(
            r#"{"id":"msg:1","message_type":"task","payload":{"pr_id":"pr-7","files":["a.rs"]}}"#,
        );
        // Not decoded into JSON by reading it.
        assert!(!ctx.payload_decoded());
        assert_eq!(ctx.head().payload, Value::Null);
        let mut parts = Parts::new(ctx.clone());
        let review = Review::from_parts(&mut parts).expect("decodes");
        assert_eq!(
            review,
            Review {
                pr_id: "pr-7".into(),
                files: vec!["a.rs".into()]
            }
        );
        assert!(
            !ctx.payload_decoded(),
            "a typed argument needs no JSON tree"
        );
        // Asked for, the JSON is the whole payload, in `message()` too.
        assert_eq!(ctx.payload()["files"][0], "a.rs");
        assert_eq!(ctx.message().payload["pr_id"], "pr-7");
        assert_eq!(ctx.message().id, "msg:1");
        assert_eq!(ctx.message_type(), "task");
        // A `Value` argument is the same JSON.
        let v = Value::from_parts(&mut parts).expect("any JSON");
        assert_eq!(&v, ctx.payload());
    }

    #[test]
    fn an_absent_or_null_payload_is_an_empty_object_for_every_reader() {
        for data in [
            r#"{"message_type":"task"}"#,
            r#"{"message_type":"task","payload":null}"#,
        ] {
            let ctx = read(data);
            assert_eq!(ctx.payload(), &serde_json::json!({}), "{data}");
            #[derive(serde::Deserialize)]
            struct Nothing {
                #[serde(default)]
                _n: u8,
            }
            assert!(Nothing::from_parts(&mut Parts::new(ctx)).is_ok(), "{data}");
        }
    }

    #[test]
    fn a_payload_that_does_not_fit_the_argument_says_so() {
        let ctx = read(r#"{"message_type":"task","payload":{"files":["a.rs"]}}"#);
        let Err(Outcome::BadPayload(why)) = Review::from_parts(&mut Parts::new(ctx)) else {
            panic!("a missing field is a bad payload");
        };
        assert!(why.contains("missing field `pr_id`"), "{why}");
        assert!(why.contains("Review"), "{why}");
    }
}
