//! The MCP tools, one file each: its parameter struct (which gives its input schema, the
//! arguments it allows and their parsing — see `params.rs`), its definition for
//! `tools/list` (name, description for an LLM, output schema, annotations), and its run.
//! Who may act for whom is decided by `authz.rs`, for every tool.

mod acknowledge;
mod agents;
mod peek;
mod publish;
mod queue_status;
mod receive;
mod request;
mod send;
mod workflow_start;
mod workflow_status;

use std::sync::Arc;
use std::time::Duration;

use fabric_worker::Bus;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::auth::Identity;
use super::params;

/// Every tool name, as listed.
pub const TOOL_NAMES: [&str; 10] = [
    send::NAME,
    receive::NAME,
    acknowledge::NAME,
    publish::NAME,
    queue_status::NAME,
    request::NAME,
    peek::NAME,
    agents::NAME,
    workflow_start::NAME,
    workflow_status::NAME,
];

/// How long a message received through MCP may stay unacknowledged before it is received
/// again (`fabric mcp --visibility-timeout`).
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(300);

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

/// The tools, as `tools/list` shows them; `visibility` is the visibility timeout of
/// received messages.
pub fn definitions(visibility: Duration) -> Vec<Tool> {
    vec![
        send::definition(),
        receive::definition(visibility),
        acknowledge::definition(),
        publish::definition(),
        queue_status::definition(),
        request::definition(),
        peek::definition(),
        agents::definition(),
        workflow_start::definition(),
        workflow_status::definition(),
    ]
}

/// A tool definition: the input schema comes from the parameter struct `P`.
fn definition<P: schemars::JsonSchema>(
    name: &'static str,
    title: &str,
    description: String,
    output_schema: Value,
    annotations: ToolAnnotations,
) -> Tool {
    let output = match output_schema {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Tool::new(name, description, Arc::new(params::input_schema::<P>()))
        .with_title(title)
        .with_raw_output_schema(Arc::new(output))
        .with_annotations(annotations.open_world(false))
}

/// The bus, connected at first use (so the server starts while Redis is down, and bad
/// arguments are reported as such even then).
pub(crate) struct BusCell {
    builder: fabric_worker::bus::BusBuilder,
    slot: tokio::sync::Mutex<Option<Bus>>,
}

impl BusCell {
    /// A bus for `url` in `mode`, with the bus settings of the environment (TLS files, …);
    /// the settings are checked now (the TLS files read), the connection made at first use.
    pub(crate) fn new(
        url: impl Into<String>,
        mode: fabric_worker::bus::Mode,
    ) -> fabric_worker::Result<Self> {
        let builder = Bus::builder(url)
            .from_env()?
            .mode(mode)
            .connect_timeout(Duration::from_secs(2));
        builder.check()?;
        Ok(BusCell {
            builder,
            slot: tokio::sync::Mutex::new(None),
        })
    }

    /// The bus, connecting it if needed.
    pub(crate) async fn get(&self) -> Result<Bus, ToolError> {
        self.bus().await.map_err(ToolError::from)
    }

    /// The bus, connecting it if needed (a failed connection is tried again next time).
    pub(crate) async fn bus(&self) -> fabric_worker::Result<Bus> {
        let mut slot = self.slot.lock().await;
        if let Some(bus) = slot.as_ref() {
            return Ok(bus.clone());
        }
        let bus = self.builder.clone().connect().await?;
        *slot = Some(bus.clone());
        Ok(bus)
    }
}

/// What a tool call has to work with.
pub(crate) struct CallContext<'a> {
    /// The bus (connected at first use).
    pub(crate) bus: &'a BusCell,
    /// Who is calling.
    pub(crate) identity: &'a Identity,
    /// Cancelled when the client cancels the call.
    pub(crate) cancel: &'a CancellationToken,
    /// How long a received message may stay unacknowledged before it is received again.
    pub(crate) visibility: Duration,
    /// Where to report progress, when the client asked for it (a `progressToken`).
    pub(crate) progress: Option<Progress>,
    /// Blocking receives per identity and in all.
    pub(crate) limits: &'a super::limits::Limits,
    /// Topic patterns agents may publish on.
    pub(crate) topics: &'a [String],
}

/// A client's progress token and the way back to it.
pub(crate) struct Progress {
    pub(crate) token: rmcp::model::ProgressToken,
    pub(crate) peer: rmcp::Peer<rmcp::RoleServer>,
}

impl Progress {
    /// Sends one progress notification (best effort: a client gone is not an error here).
    pub(crate) async fn notify(&self, progress: f64, total: f64, message: String) {
        let p = rmcp::model::ProgressNotificationParam::new(self.token.clone(), progress)
            .with_total(total)
            .with_message(message);
        if let Err(e) = self.peer.notify_progress(p).await {
            tracing::debug!(error = %e, "progress notification not sent");
        }
    }
}

impl CallContext<'_> {
    /// Runs a bus operation, unless the client cancels the call first.
    async fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, fabric_worker::Error>>,
    ) -> Result<T, ToolError> {
        tokio::select! {
            r = fut => r.map_err(ToolError::from),
            _ = self.cancel.cancelled() => Err(ToolError("cancelled by the client".into())),
        }
    }
}

/// Runs tool `tool` (a listed name) with `args`: the arguments are parsed (and refused with
/// a clear error) before Redis is used.
pub(crate) async fn call(
    ctx: &CallContext<'_>,
    tool: &str,
    args: &JsonObject,
) -> Result<Value, ToolError> {
    use params::parse;
    match tool {
        send::NAME => send::run(ctx, parse(tool, args)?).await,
        receive::NAME => receive::run(ctx, parse(tool, args)?).await,
        acknowledge::NAME => acknowledge::run(ctx, parse(tool, args)?).await,
        publish::NAME => publish::run(ctx, parse(tool, args)?).await,
        queue_status::NAME => queue_status::run(ctx, parse(tool, args)?).await,
        request::NAME => request::run(ctx, parse(tool, args)?).await,
        peek::NAME => peek::run(ctx, parse(tool, args)?).await,
        agents::NAME => agents::run(ctx, parse(tool, args)?).await,
        workflow_start::NAME => workflow_start::run(ctx, parse(tool, args)?).await,
        workflow_status::NAME => workflow_status::run(ctx, parse(tool, args)?).await,
        other => Err(ToolError(format!(
            "unknown tool {other:?}; the tools are {}",
            TOOL_NAMES.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listed_names_are_portable() {
        let defs = definitions(DEFAULT_VISIBILITY_TIMEOUT);
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
        assert_eq!(canonical_name("fabric.message.send"), Some(send::NAME));
        assert_eq!(canonical_name("fabric_message_send"), Some(send::NAME));
        assert_eq!(
            canonical_name("fabric.message.queue_status"),
            Some(queue_status::NAME)
        );
        assert_eq!(
            canonical_name("fabric.message.request"),
            Some(request::NAME)
        );
        assert_eq!(canonical_name("fabric.message.nope"), None);
        assert_eq!(canonical_name("send"), None);
    }

    #[test]
    fn anything_but_the_listed_arguments_is_refused() {
        let mut bad = JsonObject::new();
        bad.insert("surely_not_an_argument".into(), json!(1));
        let errors = [
            params::parse::<send::Params>(send::NAME, &bad).map(|_| ()),
            params::parse::<receive::Params>(receive::NAME, &bad).map(|_| ()),
            params::parse::<acknowledge::Params>(acknowledge::NAME, &bad).map(|_| ()),
            params::parse::<publish::Params>(publish::NAME, &bad).map(|_| ()),
            params::parse::<queue_status::Params>(queue_status::NAME, &bad).map(|_| ()),
            params::parse::<request::Params>(request::NAME, &bad).map(|_| ()),
            params::parse::<peek::Params>(peek::NAME, &bad).map(|_| ()),
            params::parse::<agents::Params>(agents::NAME, &bad).map(|_| ()),
            params::parse::<workflow_start::Params>(workflow_start::NAME, &bad).map(|_| ()),
            params::parse::<workflow_status::Params>(workflow_status::NAME, &bad).map(|_| ()),
        ];
        for e in errors {
            let e = e.unwrap_err().0;
            assert!(
                e.contains("unknown argument `surely_not_an_argument`"),
                "{e}"
            );
        }
    }
}
