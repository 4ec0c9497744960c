//! `fabric mcp`: the MCP server exposing the bus to AI agents, over stdio or Streamable HTTP.
//!
//! Tools are listed with underscore names (`fabric_message_send`, …); a call using the
//! dotted spelling of the Python bus's clients (`fabric.message.send`) reaches the same
//! tool without being listed twice.

pub mod auth;
mod authz;
pub mod http;
pub(crate) mod params;
pub mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};

pub use auth::{Authenticator, Identity, JwtConfig};

use crate::error::{Error, Result};

/// How the server reaches Redis.
#[derive(Clone, Debug)]
pub struct McpConfig {
    /// The Redis URL.
    pub redis_url: String,
    /// How messages travel: in secure mode the server sends through the outbox of the
    /// agent it authenticated, and the router delivers.
    pub mode: fabric_worker::bus::Mode,
}

/// The MCP server: one per process, cheap to clone (one clone per HTTP session).
#[derive(Clone)]
pub struct FabricMcp {
    inner: Arc<Inner>,
}

struct Inner {
    bus: tools::BusCell,
    /// The fixed identity of a stdio server; `None` over HTTP (taken from each request).
    identity: Option<Identity>,
    tools: Vec<Tool>,
    /// Consumer names of this server are `<agent>-mcp-<instance>`.
    instance: String,
}

impl std::fmt::Debug for FabricMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricMcp")
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

impl FabricMcp {
    /// A server acting as `identity` for every call (stdio), or, with `None`, as the
    /// identity the HTTP layer authenticated for each request.
    ///
    /// Redis is connected lazily, at the first tool call: the server starts (and lists its
    /// tools) even while Redis is down, and each call then says Redis is unreachable.
    pub fn new(config: &McpConfig, identity: Option<Identity>) -> Result<Self> {
        fabric_worker::bus::validate_url(&config.redis_url)
            .map_err(|e| Error::Usage(e.to_string()))?;
        Ok(FabricMcp {
            inner: Arc::new(Inner {
                bus: tools::BusCell::new(config.redis_url.clone(), config.mode),
                identity,
                tools: tools::definitions(),
                instance: uuid::Uuid::new_v4()
                    .simple()
                    .to_string()
                    .chars()
                    .take(8)
                    .collect(),
            }),
        })
    }

    /// Serves MCP over stdin/stdout until the client closes stdin.
    pub async fn serve_stdio(self) -> Result<()> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::Server(format!("stdio session failed to start: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| Error::Server(format!("stdio session ended abnormally: {e}")))?;
        Ok(())
    }

    fn identity_of(&self, context: &RequestContext<RoleServer>) -> Option<Identity> {
        if let Some(id) = &self.inner.identity {
            return Some(id.clone());
        }
        context
            .extensions
            .get::<::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Identity>())
            .cloned()
    }

    /// Runs one tool call; `Err` only for an unknown tool (a protocol error).
    async fn dispatch(
        &self,
        name: &str,
        args: JsonObject,
        identity: Option<Identity>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::result::Result<CallToolResult, McpError> {
        let Some(tool) = tools::canonical_name(name) else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool {name:?}; the tools are {}",
                    tools::TOOL_NAMES.join(", ")
                ),
                None,
            ));
        };
        let Some(identity) = identity else {
            return Ok(tool_error(
                "not authenticated: this server could not tell who you are".into(),
            ));
        };
        let ctx = tools::CallContext {
            bus: &self.inner.bus,
            identity: &identity,
            cancel: &cancel,
            instance: &self.inner.instance,
        };
        let started = std::time::Instant::now();
        let result = tools::call(&ctx, tool, &args).await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match result {
            Ok(v) => {
                tracing::debug!(tool, caller = %identity, ms, "tool call ok");
                CallToolResult::structured(v)
            }
            Err(e) => {
                tracing::info!(tool, caller = %identity, ms, error = %e, "tool call refused or failed");
                tool_error(e.0)
            }
        })
    }
}

fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

const INSTRUCTIONS: &str = "Fabric message bus: durable agent-to-agent messaging on Redis Streams. \
Each agent has an inbox. Use fabric_message_send to queue a message for another agent, \
fabric_message_request to send one and wait for the reply, fabric_message_receive to take \
messages from your own inbox (then fabric_message_acknowledge their _stream_id once handled), \
fabric_message_queue_status to see your inbox, and fabric_message_publish to broadcast on a topic. \
You always act as your own agent identity.";

impl ServerHandler for FabricMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("fabric", env!("CARGO_PKG_VERSION"))
                    .with_title("Fabric message bus"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let name = tools::canonical_name(name)?;
        self.inner.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, McpError> {
        let identity = self.identity_of(&context);
        let args = request.arguments.unwrap_or_default();
        self.dispatch(&request.name, args, identity, context.ct.clone())
            .await
            .map(CallToolResponse::from)
    }
}
