//! The MCP tools: their definitions (names, descriptions for an LLM, input and output
//! schemas), argument checking, authorization and execution.

use std::sync::Arc;
use std::time::Duration;

use fabric_worker::{Bus, Message, Priority, ReceiveOptions, keys};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::auth::Identity;

/// `fabric_message_send`.
pub const SEND: &str = "fabric_message_send";
/// `fabric_message_receive`.
pub const RECEIVE: &str = "fabric_message_receive";
/// `fabric_message_acknowledge`.
pub const ACKNOWLEDGE: &str = "fabric_message_acknowledge";
/// `fabric_message_publish`.
pub const PUBLISH: &str = "fabric_message_publish";
/// `fabric_message_queue_status`.
pub const QUEUE_STATUS: &str = "fabric_message_queue_status";
/// `fabric_message_request`.
pub const REQUEST: &str = "fabric_message_request";

/// Every tool name, as listed.
pub const TOOL_NAMES: [&str; 6] = [SEND, RECEIVE, ACKNOWLEDGE, PUBLISH, QUEUE_STATUS, REQUEST];

/// Default `count` of `fabric_message_receive`.
pub const DEFAULT_COUNT: u64 = 10;
/// Largest `count` of `fabric_message_receive`.
pub const MAX_COUNT: u64 = fabric_worker::bus::MAX_RECEIVE_COUNT as u64;
/// Default `block_ms` of `fabric_message_receive`.
pub const DEFAULT_BLOCK_MS: u64 = 5_000;
/// Largest `block_ms` of `fabric_message_receive`.
pub const MAX_BLOCK_MS: u64 = 60_000;
/// Default `timeout_ms` of `fabric_message_request`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Largest `timeout_ms` of `fabric_message_request`.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 120_000;
/// Largest serialized `payload` / `message` accepted (1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Most ids one `fabric_message_acknowledge` call takes.
pub const MAX_ACK_IDS: usize = 1000;

const AGENT_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
const TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$";
const STREAM_ID_PATTERN: &str = "^[0-9]+-[0-9]+$";

/// The listed name of a tool called as `name`: the listed name itself, or its dotted
/// spelling (`fabric.message.send`, as the Python bus's clients call it).
pub fn canonical_name(name: &str) -> Option<&'static str> {
    let underscored = name.replace('.', "_");
    TOOL_NAMES.iter().copied().find(|t| *t == underscored)
}

/// A tool failure: the text is shown to the model (`isError: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError(pub String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<fabric_worker::Error> for ToolError {
    fn from(e: fabric_worker::Error) -> Self {
        if e.is_connection_error() {
            ToolError(format!(
                "Redis is unreachable, so the message bus cannot be used right now: {e}. Retry later; if it persists, ask the operator to check Redis."
            ))
        } else {
            ToolError(e.to_string())
        }
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ToolError> {
    Err(ToolError(msg.into()))
}

fn obj(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn priority_schema() -> Value {
    json!({
        "description": "Priority: \"low\", \"normal\" (default), \"high\" or \"urgent\" (an unknown name counts as normal), or the number 1-4. Carried with the message; inboxes stay first-in first-out.",
        "anyOf": [
            {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
            {"type": "integer", "minimum": 1, "maximum": 4}
        ],
        "default": "normal"
    })
}

fn message_schema(extra: Value) -> Value {
    let mut props = json!({
        "id": {"type": "string", "description": "Message id, msg:<uuid>."},
        "from_agent": {"type": "string"},
        "to_agent": {"type": "string"},
        "message_type": {"type": "string"},
        "payload": {"description": "The message body (normally a JSON object)."},
        "timestamp": {"type": "string", "description": "Naive UTC ISO-8601."},
        "priority": {"type": "integer", "description": "1 low, 2 normal, 3 high, 4 urgent."},
        "ttl_seconds": {"type": "integer"},
        "reply_to": {"type": ["string", "null"]},
        "correlation_id": {"type": ["string", "null"]}
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut props, extra) {
        p.extend(e);
    }
    json!({
        "type": "object",
        "properties": props,
        "required": ["id", "from_agent", "to_agent", "message_type", "payload", "timestamp", "priority"]
    })
}

/// The six tools, as `tools/list` shows them.
pub fn definitions() -> Vec<Tool> {
    let agent = |d: &str| json!({"type": "string", "pattern": AGENT_PATTERN, "maxLength": 64, "description": d});
    let payload_desc = format!(
        "The message body: a JSON object (not a string), at most {} KiB serialized. For a task, say what to do, e.g. {{\"task_type\": \"code_review\", \"pr_id\": \"123\"}}.",
        MAX_PAYLOAD_BYTES / 1024
    );

    let send = Tool::new(
        SEND,
        "Send a message to another agent's inbox (durable: it waits there until that agent's worker handles it). \
         Returns at once with the message id; it does not wait for an answer (use fabric_message_request for that). \
         The sender is always you: from_agent may be omitted, and if given it must be your own agent id.",
        obj(json!({
            "type": "object",
            "properties": {
                "to_agent": agent("The recipient agent id, e.g. \"percy\" (letters, digits, _ and -)."),
                "message_type": {"type": "string", "pattern": TYPE_PATTERN, "description": "What kind of message this is; the recipient dispatches on it. Usually \"task\"; also \"event\", \"response\", or any type the recipient handles."},
                "payload": {"type": "object", "description": payload_desc},
                "from_agent": agent("Your own agent id (optional: defaults to the identity you are connected as; any other value is refused)."),
                "priority": priority_schema(),
                "reply_to": {"type": "string", "maxLength": 256, "description": "Stream key where the recipient should send its reply (optional; a task defaults to agent:<from_agent>:results)."},
                "correlation_id": {"type": "string", "maxLength": 256, "description": "Optional id to correlate replies with (a fresh one is generated otherwise)."}
            },
            "required": ["to_agent", "message_type", "payload"],
            "additionalProperties": false
        })),
    )
    .with_title("Send a message")
    .with_raw_output_schema(obj(json!({
        "type": "object",
        "properties": {
            "message_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued"]},
            "stream_id": {"type": "string", "description": "Entry id in the recipient's inbox."},
            "timestamp": {"type": "string"},
            "to_agent": {"type": "string"}
        },
        "required": ["message_id", "status", "stream_id", "timestamp"]
    })))
    .with_annotations(
        ToolAnnotations::with_title("Send a message")
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
    );

    let receive = Tool::new(
        RECEIVE,
        format!(
            "Take new messages from your own inbox (agent_id defaults to you; you cannot read another agent's inbox). \
             Waits up to block_ms milliseconds (default {DEFAULT_BLOCK_MS}, at most {MAX_BLOCK_MS}; 0 = don't wait) for the first message, then returns at most count messages (default {DEFAULT_COUNT}, at most {MAX_COUNT}). \
             An empty list just means nothing arrived in time. Each message has a _stream_id: after handling it, pass those ids to fabric_message_acknowledge, \
             otherwise it is eventually redelivered. Set auto_ack to true to acknowledge on receipt instead."
        ),
        obj(json!({
            "type": "object",
            "properties": {
                "agent_id": agent("Whose inbox: your own agent id (optional; defaults to you). Only admins may name another agent."),
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "default": DEFAULT_COUNT, "description": format!("At most this many messages (1-{MAX_COUNT}).")},
                "block_ms": {"type": "integer", "minimum": 0, "maximum": MAX_BLOCK_MS, "default": DEFAULT_BLOCK_MS, "description": format!("How long to wait for a first message, in milliseconds (0-{MAX_BLOCK_MS}; 0 returns at once).")},
                "consumer_group": {"type": "string", "maxLength": 128, "description": "Consumer group to read through (optional; default <agent_id>_workers, shared with the agent's workers)."},
                "auto_ack": {"type": "boolean", "default": false, "description": "Acknowledge the returned messages immediately (at-most-once)."}
            },
            "additionalProperties": false
        })),
    )
    .with_title("Receive messages")
    .with_raw_output_schema(obj(json!({
        "type": "object",
        "properties": {
            "messages": {"type": "array", "items": message_schema(json!({
                "_stream_id": {"type": "string", "description": "Pass this to fabric_message_acknowledge."},
                "_consumer_group": {"type": "string"},
                "_attempt": {"type": "integer"},
                "_headers": {"type": "object"}
            }))},
            "count": {"type": "integer"},
            "agent_id": {"type": "string"},
            "consumer_group": {"type": "string"},
            "acknowledged": {"type": "boolean"}
        },
        "required": ["messages", "count", "agent_id"]
    })))
    .with_annotations(
        ToolAnnotations::with_title("Receive messages")
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
    );

    let ack = Tool::new(
        ACKNOWLEDGE,
        "Acknowledge messages of your own inbox that you have handled, by their _stream_id (as returned by fabric_message_receive, e.g. \"1732565756123-0\"; not the msg: id). \
         Acknowledged messages are never redelivered. Reports for each id whether it was pending.",
        obj(json!({
            "type": "object",
            "properties": {
                "agent_id": agent("Whose inbox: your own agent id (optional; defaults to you)."),
                "message_ids": {"type": "array", "minItems": 1, "maxItems": MAX_ACK_IDS, "items": {"type": "string", "pattern": STREAM_ID_PATTERN}, "description": "The _stream_id values of the received messages."},
                "consumer_group": {"type": "string", "maxLength": 128, "description": "The consumer group they were received through (optional; default <agent_id>_workers)."}
            },
            "required": ["message_ids"],
            "additionalProperties": false
        })),
    )
    .with_title("Acknowledge messages")
    .with_raw_output_schema(obj(json!({
        "type": "object",
        "properties": {
            "acknowledged": {"type": "array", "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "acked": {"type": "boolean"}},
                "required": ["id", "acked"]
            }},
            "agent_id": {"type": "string"}
        },
        "required": ["acknowledged"]
    })))
    .with_annotations(
        ToolAnnotations::with_title("Acknowledge messages")
            .read_only(false)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    );

    let publish = Tool::new(
        PUBLISH,
        "Broadcast a message on a Pub/Sub topic (e.g. \"analytics.insights\", \"system.alerts\") to whoever is subscribed right now. \
         Fire-and-forget: nothing is stored, and subscribers that are not connected miss it. Returns how many subscribers received it. \
         To reach one agent reliably, use fabric_message_send instead.",
        obj(json!({
            "type": "object",
            "properties": {
                "topic": {"type": "string", "minLength": 1, "maxLength": 256, "description": "Topic (channel) name: printable ASCII without spaces."},
                "message": {"type": "object", "description": format!("The message: a JSON object, at most {} KiB serialized.", MAX_PAYLOAD_BYTES / 1024)},
                "from_agent": agent("Your own agent id (optional; defaults to you; any other value is refused).")
            },
            "required": ["topic", "message"],
            "additionalProperties": false
        })),
    )
    .with_title("Publish on a topic")
    .with_raw_output_schema(obj(json!({
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "recipients": {"type": "integer", "minimum": 0},
            "published": {"type": "boolean"}
        },
        "required": ["topic", "recipients", "published"]
    })))
    .with_annotations(
        ToolAnnotations::with_title("Publish on a topic")
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
    );

    let status = Tool::new(
        QUEUE_STATUS,
        "Show the state of your own inbox without changing it: queue_depth (messages not yet handled = undelivered + pending), \
         pending (delivered, not yet acknowledged), consumers and how long each has been idle, the age of the oldest pending message, \
         dead letters (messages that failed for good) and scheduled retries.",
        obj(json!({
            "type": "object",
            "properties": {
                "agent_id": agent("Whose inbox: your own agent id (optional; defaults to you)."),
                "consumer_group": {"type": "string", "maxLength": 128, "description": "Consumer group the figures are for (optional; default <agent_id>_workers)."}
            },
            "additionalProperties": false
        })),
    )
    .with_title("Inbox status")
    .with_raw_output_schema(obj(json!({
        "type": "object",
        "properties": {
            "agent_id": {"type": "string"},
            "stream": {"type": "string"},
            "consumer_group": {"type": "string"},
            "queue_depth": {"type": "integer"},
            "undelivered": {"type": ["integer", "null"]},
            "pending": {"type": "integer"},
            "consumers": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "pending": {"type": "integer"},
                    "idle_ms": {"type": "integer"},
                    "inactive_ms": {"type": ["integer", "null"]}
                },
                "required": ["name", "pending", "idle_ms"]
            }},
            "oldest_pending_age_ms": {"type": ["integer", "null"]},
            "oldest_pending_idle_ms": {"type": ["integer", "null"]},
            "stream_length": {"type": "integer"},
            "last_generated_id": {"type": ["string", "null"]},
            "first_entry_id": {"type": ["string", "null"]},
            "last_entry_id": {"type": ["string", "null"]},
            "group_exists": {"type": "boolean"},
            "dead_letters": {"type": "integer"},
            "scheduled_retries": {"type": "integer"},
            "stream_info": {"type": ["object", "null"], "description": "XINFO STREAM of the inbox (null when the inbox does not exist yet)."}
        },
        "required": ["agent_id", "queue_depth", "pending", "dead_letters"]
    })))
    .with_annotations(
        ToolAnnotations::with_title("Inbox status")
            .read_only(true)
            .open_world(false),
    );

    let request = Tool::new(
        REQUEST,
        format!(
            "Send a message to another agent and wait for its reply (request/reply). Returns the reply message; its payload holds the answer. \
             Waits at most timeout_ms milliseconds (default {DEFAULT_REQUEST_TIMEOUT_MS}, at most {MAX_REQUEST_TIMEOUT_MS}); on timeout the request stays queued \
             and you get an error saying no reply came (is a worker for that agent running?). If the recipient's handler failed for good you get its error. \
             The sender is always you (from_agent optional; any other value is refused)."
        ),
        obj(json!({
            "type": "object",
            "properties": {
                "to_agent": agent("The agent that should answer, e.g. \"percy\"."),
                "message_type": {"type": "string", "pattern": TYPE_PATTERN, "description": "The message type the recipient handles, usually \"task\"."},
                "payload": {"type": "object", "description": payload_desc},
                "from_agent": agent("Your own agent id (optional; defaults to you)."),
                "priority": priority_schema(),
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_REQUEST_TIMEOUT_MS, "default": DEFAULT_REQUEST_TIMEOUT_MS, "description": format!("How long to wait for the reply, in milliseconds (1-{MAX_REQUEST_TIMEOUT_MS}).")}
            },
            "required": ["to_agent", "message_type", "payload"],
            "additionalProperties": false
        })),
    )
    .with_title("Request and await a reply")
    .with_raw_output_schema(obj(message_schema(json!({}))))
    .with_annotations(
        ToolAnnotations::with_title("Request and await a reply")
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
    );

    vec![send, receive, ack, publish, status, request]
}

/// The bus, connected at first use (so the server starts while Redis is down, and bad
/// arguments are reported as such even then).
pub(crate) struct BusCell {
    url: String,
    slot: tokio::sync::Mutex<Option<Bus>>,
}

impl BusCell {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        BusCell {
            url: url.into(),
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The bus, connecting it if needed.
    pub(crate) async fn get(&self) -> Result<Bus, ToolError> {
        let mut slot = self.slot.lock().await;
        if let Some(bus) = slot.as_ref() {
            return Ok(bus.clone());
        }
        let bus = Bus::builder(self.url.clone())
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(ToolError::from)?;
        *slot = Some(bus.clone());
        Ok(bus)
    }
}

/// What a tool call has to work with.
pub(crate) struct CallContext<'a> {
    /// The bus (connected at first use).
    pub bus: &'a BusCell,
    /// A Redis client for the few reads the bus does not offer (`XINFO STREAM`).
    pub client: &'a redis::Client,
    /// Who is calling.
    pub identity: &'a Identity,
    /// Cancelled when the client cancels the call.
    pub cancel: &'a CancellationToken,
    /// This server's instance id: its consumers are named `<agent>-mcp-<instance>`.
    pub instance: &'a str,
}

/// Runs tool `tool` (a listed name) with `args`: arguments are checked first, then Redis is used.
pub(crate) async fn call(
    ctx: &CallContext<'_>,
    tool: &str,
    args: &JsonObject,
) -> Result<Value, ToolError> {
    let args = Args { tool, map: args };
    match tool {
        SEND => send(ctx, &args).await,
        RECEIVE => receive(ctx, &args).await,
        ACKNOWLEDGE => acknowledge(ctx, &args).await,
        PUBLISH => publish(ctx, &args).await,
        QUEUE_STATUS => queue_status(ctx, &args).await,
        REQUEST => request(ctx, &args).await,
        other => err(format!(
            "unknown tool {other:?}; the tools are {}",
            TOOL_NAMES.join(", ")
        )),
    }
}

/// Checks the arguments of `tool` without running it (used before a Redis connection exists).
pub fn check_arguments(tool: &str, args: &JsonObject) -> Result<(), ToolError> {
    let allowed: &[&str] = match tool {
        SEND => &[
            "to_agent",
            "message_type",
            "payload",
            "from_agent",
            "priority",
            "reply_to",
            "correlation_id",
        ],
        RECEIVE => &[
            "agent_id",
            "count",
            "block_ms",
            "consumer_group",
            "auto_ack",
        ],
        ACKNOWLEDGE => &["agent_id", "message_ids", "consumer_group"],
        PUBLISH => &["topic", "message", "from_agent"],
        QUEUE_STATUS => &["agent_id", "consumer_group"],
        REQUEST => &[
            "to_agent",
            "message_type",
            "payload",
            "from_agent",
            "priority",
            "timeout_ms",
        ],
        _ => &[],
    };
    if let Some(unknown) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return err(format!(
            "unknown argument `{unknown}` for {tool}; it takes: {}",
            allowed.join(", ")
        ));
    }
    Ok(())
}

struct Args<'a> {
    tool: &'a str,
    map: &'a JsonObject,
}

fn describe(v: &Value) -> String {
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

impl<'a> Args<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bad<T>(&self, key: &str, expected: &str, got: &Value) -> Result<T, ToolError> {
        err(format!(
            "invalid argument `{key}` of {}: expected {expected}, got {}",
            self.tool,
            describe(got)
        ))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => self.bad(key, "a string", other),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, ToolError> {
        self.opt_str(key)?.ok_or_else(|| {
            ToolError(format!(
                "missing required argument `{key}` of {}",
                self.tool
            ))
        })
    }

    fn opt_int(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ToolError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let expected = format!("an integer from {min} to {max}");
        let n = match v {
            Value::Number(n) => match n.as_u64() {
                Some(n) => n,
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f >= 0.0 && f <= u64::MAX as f64 => f as u64,
                    _ => return self.bad(key, &expected, v),
                },
            },
            other => return self.bad(key, &expected, other),
        };
        if n < min || n > max {
            return err(format!(
                "invalid argument `{key}` of {}: {n} is out of range; it must be from {min} to {max}",
                self.tool
            ));
        }
        Ok(Some(n))
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ToolError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => self.bad(key, "true or false", other),
        }
    }

    /// A JSON object argument, size-checked.
    fn object(&self, key: &str, required: bool) -> Result<Map<String, Value>, ToolError> {
        match self.get(key) {
            None if required => err(format!(
                "missing required argument `{key}` of {}: pass a JSON object, e.g. {{\"task_type\": \"summarize\"}}",
                self.tool
            )),
            None => Ok(Map::new()),
            Some(Value::Object(m)) => {
                let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
                if size > MAX_PAYLOAD_BYTES {
                    return err(format!(
                        "argument `{key}` of {} is too large: {size} bytes serialized, at most {MAX_PAYLOAD_BYTES} bytes (1 MiB) are allowed; store big data elsewhere and send a reference",
                        self.tool
                    ));
                }
                Ok(m.clone())
            }
            Some(other @ Value::String(s)) => {
                let hint = if serde_json::from_str::<Map<String, Value>>(s).is_ok() {
                    " (it looks like JSON text: pass the object itself, not a string)"
                } else {
                    ""
                };
                err(format!(
                    "invalid argument `{key}` of {}: expected a JSON object, got {}{hint}",
                    self.tool,
                    describe(other)
                ))
            }
            Some(other) => self.bad(key, "a JSON object", other),
        }
    }

    fn string_list(&self, key: &str, max: usize) -> Result<Vec<String>, ToolError> {
        let Some(v) = self.get(key) else {
            return err(format!(
                "missing required argument `{key}` of {}: pass an array of _stream_id strings",
                self.tool
            ));
        };
        let Value::Array(items) = v else {
            return self.bad(key, "an array of strings", v);
        };
        if items.is_empty() {
            return err(format!(
                "argument `{key}` of {} is empty: pass at least one id",
                self.tool
            ));
        }
        if items.len() > max {
            return err(format!(
                "argument `{key}` of {} has {} items; at most {max} are allowed per call",
                self.tool,
                items.len()
            ));
        }
        items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => self.bad(key, "an array of strings", other),
            })
            .collect()
    }

    fn priority(&self, key: &str) -> Result<Priority, ToolError> {
        match self.get(key) {
            None => Ok(Priority::Normal),
            // Unknown names are "normal", as the Python bus does.
            Some(Value::String(s)) => Ok(Priority::from_name(s.trim())
                .or_else(|| {
                    s.trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|n| (1..=4).contains(n))
                        .map(Priority::from_u8)
                })
                .unwrap_or(Priority::Normal)),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(p @ 1..=4) => Ok(Priority::from_u8(p as u8)),
                _ => self.bad(
                    key,
                    "\"low\", \"normal\", \"high\", \"urgent\" or an integer from 1 to 4",
                    v,
                ),
            },
            Some(other) => self.bad(
                key,
                "\"low\", \"normal\", \"high\", \"urgent\" or an integer from 1 to 4",
                other,
            ),
        }
    }
}

fn validate_agent_arg(key: &str, value: &str) -> Result<(), ToolError> {
    keys::validate_agent(value).map_err(|e| match e {
        fabric_worker::Error::Invalid { value, reason, .. } => ToolError(format!(
            "invalid {key} {value:?}: {reason} (agent ids are 1-64 characters from A-Z a-z 0-9 _ -, starting with a letter or digit)"
        )),
        other => ToolError::from(other),
    })
}

/// The sender: the caller, or (for an admin) whoever it names.
fn resolve_from(identity: &Identity, given: Option<&str>) -> Result<String, ToolError> {
    if let Some(f) = given {
        validate_agent_arg("from_agent", f)?;
    }
    match (identity, given) {
        (Identity::Agent(me), None) => Ok(me.clone()),
        (Identity::Agent(me), Some(f)) if f == me => Ok(me.clone()),
        (Identity::Agent(me), Some(f)) => err(format!(
            "refused: from_agent {f:?} is not your identity; you are connected as agent {me:?} and can only send as yourself. Omit from_agent (or set it to {me:?})."
        )),
        (Identity::Admin(_), Some(f)) => Ok(f.to_owned()),
        (Identity::Admin(name), None) => {
            if keys::validate_agent(name).is_ok() {
                Ok(name.clone())
            } else {
                err("from_agent is required when acting as admin")
            }
        }
    }
}

/// Whose inbox: the caller's own, or (for an admin) whoever it names.
fn resolve_inbox(identity: &Identity, given: Option<&str>) -> Result<String, ToolError> {
    if let Some(a) = given {
        validate_agent_arg("agent_id", a)?;
    }
    match (identity, given) {
        (Identity::Agent(me), None) => Ok(me.clone()),
        (Identity::Agent(me), Some(a)) if a == me => Ok(me.clone()),
        (Identity::Agent(me), Some(a)) => err(format!(
            "access denied: you are connected as agent {me:?} and may only use your own inbox, not {a:?}'s. Omit agent_id (or set it to {me:?})."
        )),
        (Identity::Admin(_), Some(a)) => Ok(a.to_owned()),
        (Identity::Admin(_), None) => err("agent_id is required when acting as admin"),
    }
}

async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T, fabric_worker::Error>>,
) -> Result<T, ToolError> {
    tokio::select! {
        r = fut => r.map_err(ToolError::from),
        _ = cancel.cancelled() => err("cancelled by the client"),
    }
}

fn build_message(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Message, ToolError> {
    let to = args.req_str("to_agent")?;
    validate_agent_arg("to_agent", to)?;
    let message_type = args.req_str("message_type")?;
    keys::validate_message_type(message_type).map_err(ToolError::from)?;
    let payload = args.object("payload", true)?;
    let priority = args.priority("priority")?;
    let from = resolve_from(ctx.identity, args.opt_str("from_agent")?)?;
    let mut m =
        Message::new(from, to, message_type, Value::Object(payload)).with_priority(priority);
    if let Some(r) = args.opt_str("reply_to")? {
        m = m.with_reply_to(r);
    }
    if let Some(c) = args.opt_str("correlation_id")? {
        if c.is_empty() || c.len() > 256 {
            return err("invalid argument `correlation_id`: must be 1-256 characters");
        }
        m = m.with_correlation_id(c);
    }
    m.validate().map_err(ToolError::from)?;
    Ok(m)
}

async fn send(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let m = build_message(ctx, args)?;
    let to = m.to_agent.clone();
    let receipt = cancellable(ctx.cancel, ctx.bus.get().await?.send(m)).await?;
    Ok(json!({
        "message_id": receipt.message_id,
        "status": receipt.status,
        "stream_id": receipt.stream_id,
        "timestamp": receipt.timestamp,
        "to_agent": to,
    }))
}

async fn receive(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let agent = resolve_inbox(ctx.identity, args.opt_str("agent_id")?)?;
    let count = args
        .opt_int("count", 1, MAX_COUNT)?
        .unwrap_or(DEFAULT_COUNT);
    let block_ms = args
        .opt_int("block_ms", 0, MAX_BLOCK_MS)
        .map_err(|e| {
            if args
                .get("block_ms")
                .and_then(Value::as_u64)
                .is_some_and(|b| b > MAX_BLOCK_MS)
            {
                ToolError(format!(
                    "{e}. The cap is {MAX_BLOCK_MS} ms ({} s): call again to keep waiting",
                    MAX_BLOCK_MS / 1000
                ))
            } else {
                e
            }
        })?
        .unwrap_or(DEFAULT_BLOCK_MS);
    let group = args.opt_str("consumer_group")?.map(str::to_owned);
    let auto_ack = args.opt_bool("auto_ack")?.unwrap_or(false);
    let group_used = group.clone().unwrap_or_else(|| keys::default_group(&agent));
    let opts = ReceiveOptions {
        count: Some(count as usize),
        block: (block_ms > 0).then(|| Duration::from_millis(block_ms)),
        group: group.clone(),
        consumer: Some(format!("{agent}-mcp-{}", ctx.instance)),
    };
    // A blocking read runs on a connection of its own; dropping the future on
    // cancellation closes that connection, which ends the read on the server too.
    let bus = ctx.bus.get().await?;
    let received = cancellable(ctx.cancel, bus.receive(&agent, opts)).await?;
    if auto_ack && !received.is_empty() {
        let ids: Vec<String> = received.iter().map(|r| r.stream_id.clone()).collect();
        bus.acknowledge(&agent, &ids, Some(&group_used))
            .await
            .map_err(ToolError::from)?;
    }
    let messages: Vec<Value> = received.iter().map(|r| r.to_json()).collect();
    Ok(json!({
        "messages": messages,
        "count": messages.len(),
        "agent_id": agent,
        "consumer_group": group_used,
        "acknowledged": auto_ack,
    }))
}

async fn acknowledge(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let agent = resolve_inbox(ctx.identity, args.opt_str("agent_id")?)?;
    let ids = args.string_list("message_ids", MAX_ACK_IDS)?;
    let group = args.opt_str("consumer_group")?;
    let results = cancellable(
        ctx.cancel,
        ctx.bus.get().await?.acknowledge(&agent, &ids, group),
    )
    .await?;
    Ok(json!({"acknowledged": results, "agent_id": agent}))
}

async fn publish(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let topic = args.req_str("topic")?;
    keys::validate_topic(topic).map_err(ToolError::from)?;
    let message = args.object("message", true)?;
    let from = resolve_from(ctx.identity, args.opt_str("from_agent")?)?;
    let n = cancellable(
        ctx.cancel,
        ctx.bus
            .get()
            .await?
            .publish(topic, Value::Object(message), Some(&from)),
    )
    .await?;
    Ok(json!({"topic": topic, "recipients": n, "published": true}))
}

async fn queue_status(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let agent = resolve_inbox(ctx.identity, args.opt_str("agent_id")?)?;
    let group = args.opt_str("consumer_group")?;
    let status = cancellable(ctx.cancel, ctx.bus.get().await?.queue_status(&agent, group)).await?;
    let mut v = serde_json::to_value(&status)
        .map_err(|e| ToolError(format!("cannot encode the status: {e}")))?;
    let info = if status.stream_length > 0 || status.last_generated_id.is_some() {
        stream_info(ctx.client, &status.stream)
            .await
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if let Value::Object(m) = &mut v {
        m.insert("stream_info".into(), info);
    }
    Ok(v)
}

/// `XINFO STREAM`, shaped like the Python bus's `stream_info` (entries by id only).
async fn stream_info(client: &redis::Client, stream: &str) -> Option<Value> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .ok()?;
    let v: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .ok()?;
    let pairs = crate::redis_util::as_pairs(&v)?;
    let mut out = Map::new();
    for (k, val) in pairs {
        let key = k.replace('-', "_");
        let jv = match key.as_str() {
            "first_entry" | "last_entry" => crate::redis_util::entry_id(val)
                .map(Value::String)
                .unwrap_or(Value::Null),
            _ => crate::redis_util::to_json(val),
        };
        out.insert(key, jv);
    }
    Some(Value::Object(out))
}

async fn request(ctx: &CallContext<'_>, args: &Args<'_>) -> Result<Value, ToolError> {
    let timeout_ms = args
        .opt_int("timeout_ms", 1, MAX_REQUEST_TIMEOUT_MS)?
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    let m = build_message(ctx, args)?;
    let reply = cancellable(
        ctx.cancel,
        ctx.bus
            .get()
            .await?
            .request(m, Duration::from_millis(timeout_ms)),
    )
    .await?;
    serde_json::to_value(&reply).map_err(|e| ToolError(format!("cannot encode the reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_are_portable() {
        let defs = definitions();
        assert_eq!(defs.len(), TOOL_NAMES.len());
        for t in &defs {
            let name = t.name.as_ref();
            assert!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{name} does not match ^[a-zA-Z0-9_-]{{1,64}}$"
            );
            assert!(!name.contains("__"), "{name}");
            assert!(TOOL_NAMES.contains(&name));
            assert!(t.description.as_ref().is_some_and(|d| d.len() > 80));
            assert!(t.output_schema.is_some(), "{name} has no output schema");
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
            assert_eq!(
                t.input_schema.get("additionalProperties"),
                Some(&json!(false))
            );
        }
    }

    #[test]
    fn dotted_names_map_to_listed_names() {
        assert_eq!(canonical_name("fabric.message.send"), Some(SEND));
        assert_eq!(canonical_name("fabric_message_send"), Some(SEND));
        assert_eq!(
            canonical_name("fabric.message.queue_status"),
            Some(QUEUE_STATUS)
        );
        assert_eq!(canonical_name("fabric.message.request"), Some(REQUEST));
        assert_eq!(canonical_name("fabric.message.nope"), None);
        assert_eq!(canonical_name("send"), None);
    }

    #[test]
    fn every_schema_property_is_accepted() {
        for t in definitions() {
            let props = t.input_schema["properties"].as_object().unwrap();
            let args: JsonObject = props.keys().map(|k| (k.clone(), Value::Null)).collect();
            check_arguments(&t.name, &args).unwrap();
        }
        let mut bad = JsonObject::new();
        bad.insert("to".into(), json!("x"));
        let e = check_arguments(SEND, &bad).unwrap_err();
        assert!(e.0.contains("unknown argument `to`"), "{e}");
    }

    fn args(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn argument_errors_are_clear() {
        let m = args(
            json!({"count": "ten", "block_ms": 70000, "auto_ack": "yes", "payload": "{\"a\":1}", "p": [1], "priority": 9}),
        );
        let a = Args {
            tool: RECEIVE,
            map: &m,
        };
        let e = a.opt_int("count", 1, 1000).unwrap_err().0;
        assert!(
            e.contains("expected an integer from 1 to 1000, got a string (\"ten\")"),
            "{e}"
        );
        let e = a.opt_int("block_ms", 0, MAX_BLOCK_MS).unwrap_err().0;
        assert!(e.contains("70000 is out of range"), "{e}");
        let e = a.opt_bool("auto_ack").unwrap_err().0;
        assert!(e.contains("true or false"), "{e}");
        let e = a.object("payload", true).unwrap_err().0;
        assert!(
            e.contains("expected a JSON object") && e.contains("not a string"),
            "{e}"
        );
        let e = a.object("p", true).unwrap_err().0;
        assert!(e.contains("expected a JSON object, got an array"), "{e}");
        let e = a.priority("priority").unwrap_err().0;
        assert!(e.contains("1 to 4"), "{e}");
        let e = a.object("missing", true).unwrap_err().0;
        assert!(e.contains("missing required argument `missing`"), "{e}");
    }

    #[test]
    fn priorities_follow_the_python_bus() {
        for (v, p) in [
            (json!("low"), Priority::Low),
            (json!("HIGH"), Priority::High),
            (json!("urgent"), Priority::Urgent),
            (json!("whatever"), Priority::Normal),
            (json!(1), Priority::Low),
            (json!(4), Priority::Urgent),
            (json!("3"), Priority::High),
        ] {
            let m = args(json!({ "priority": v }));
            let a = Args {
                tool: SEND,
                map: &m,
            };
            assert_eq!(a.priority("priority").unwrap(), p, "{v}");
        }
        let m = args(json!({}));
        assert_eq!(
            Args {
                tool: SEND,
                map: &m
            }
            .priority("priority")
            .unwrap(),
            Priority::Normal
        );
    }

    #[test]
    fn payload_size_is_capped() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        let m = args(json!({"payload": {"blob": big}}));
        let e = Args {
            tool: SEND,
            map: &m,
        }
        .object("payload", true)
        .unwrap_err()
        .0;
        assert!(e.contains("too large") && e.contains("1 MiB"), "{e}");
    }

    #[test]
    fn authorization_rules() {
        let me = Identity::Agent("coder".into());
        let admin = Identity::Admin("admin".into());
        assert_eq!(resolve_from(&me, None).unwrap(), "coder");
        assert_eq!(resolve_from(&me, Some("coder")).unwrap(), "coder");
        let e = resolve_from(&me, Some("percy")).unwrap_err().0;
        assert!(e.starts_with("refused: from_agent \"percy\""), "{e}");
        assert_eq!(resolve_from(&admin, Some("percy")).unwrap(), "percy");
        assert_eq!(resolve_from(&admin, None).unwrap(), "admin");
        assert_eq!(resolve_inbox(&me, None).unwrap(), "coder");
        let e = resolve_inbox(&me, Some("percy")).unwrap_err().0;
        assert!(e.starts_with("access denied"), "{e}");
        assert!(resolve_inbox(&admin, None).is_err());
        assert_eq!(resolve_inbox(&admin, Some("percy")).unwrap(), "percy");
        let e = resolve_inbox(&me, Some("per cy")).unwrap_err().0;
        assert!(e.starts_with("invalid agent_id \"per cy\""), "{e}");
    }
}
