//! What a send reports: [`SendReceipt`] for a queued message, [`FailedSend`] for one Redis
//! refused. (A leaf module, so that both `bus` and `error` can name them.)

use serde::Serialize;

/// The result of [`Bus::send`](crate::Bus::send).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendReceipt {
    /// The message id (`msg:<uuid>`).
    pub message_id: String,
    /// `"queued"` (in the inbox, or in a priority lane of it), `"scheduled"` (waiting for
    /// its delivery time) or, from [`Bus::send_once`](crate::Bus::send_once), `"duplicate"`.
    pub status: &'static str,
    /// The entry id in the recipient's inbox (in secure mode: in the sender's outbox);
    /// empty for a scheduled message, which gets its entry when it is delivered.
    pub stream_id: String,
    /// The message timestamp.
    pub timestamp: String,
    /// The recipient.
    #[serde(rename = "to_agent")]
    pub to: String,
    /// For a scheduled message: when it is delivered, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_at_ms: Option<u64>,
}

/// A message of a batch that Redis refused (see [`Error::PartlySent`](crate::Error::PartlySent)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedSend {
    /// Its message id.
    pub message_id: String,
    /// The recipient.
    pub to: String,
    /// What Redis said.
    pub error: String,
}
