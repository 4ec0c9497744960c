//! `fabric mcp`: the MCP server exposing the bus to AI agents, over stdio or Streamable HTTP.
//!
//! Tools are listed with underscore names (`fabric_message_send`, …); a call using the
//! dotted spelling of the Python bus's clients (`fabric.message.send`) reaches the same
//! tool without being listed twice.

pub mod auth;
mod authz;
pub mod credentials;
pub(crate) mod guard;
pub mod http;
pub mod limits;
mod observe;
pub(crate) mod params;
pub mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
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
    /// How long a received message may stay unacknowledged before `fabric_message_receive`
    /// gives it out again ([`tools::DEFAULT_VISIBILITY_TIMEOUT`] by default).
    pub visibility_timeout: std::time::Duration,
    /// Topic patterns agents may publish on (admins: any channel); the defaults when empty.
    pub topics: Vec<String>,
    /// Calls per second and blocking receives per identity.
    pub limits: limits::LimitsConfig,
}

impl McpConfig {
    /// Redis at `redis_url`, in `mode`, with the default visibility timeout.
    pub fn new(redis_url: impl Into<String>, mode: fabric_worker::bus::Mode) -> McpConfig {
        McpConfig {
            redis_url: redis_url.into(),
            mode,
            visibility_timeout: tools::DEFAULT_VISIBILITY_TIMEOUT,
            topics: Vec::new(),
            limits: limits::LimitsConfig::default(),
        }
    }
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
    visibility: std::time::Duration,
    topics: Vec<String>,
    limits: limits::Limits,
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
    ///
    /// The bus settings of the environment (`FABRIC_TLS_CA_FILE`, `FABRIC_TLS_CERT_FILE`,
    /// `FABRIC_TLS_KEY_FILE`, …) apply, as `BusBuilder::from_env` reads them; a malformed URL
    /// or an unreadable or invalid TLS file is refused here, before any tool call.
    pub fn new(config: &McpConfig, identity: Option<Identity>) -> Result<Self> {
        let bus = tools::BusCell::new(config.redis_url.clone(), config.mode)
            .map_err(|e| Error::Usage(e.to_string()))?;
        Ok(FabricMcp {
            inner: Arc::new(Inner {
                bus,
                identity,
                tools: tools::definitions(config.visibility_timeout),
                visibility: config.visibility_timeout,
                topics: if config.topics.is_empty() {
                    fabric_worker::acl::DEFAULT_TOPIC_PATTERNS
                        .iter()
                        .map(|t| (*t).to_owned())
                        .collect()
                } else {
                    config.topics.clone()
                },
                limits: limits::Limits::new(config.limits),
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
        progress: Option<tools::Progress>,
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
            visibility: self.inner.visibility,
            progress,
            limits: &self.inner.limits,
            topics: &self.inner.topics,
        };
        if let Err(e) = self.inner.limits.check_rate(identity.name()) {
            tracing::info!(tool, caller = %identity, "tool call refused: rate limit");
            return Ok(tool_error(e.0));
        }
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
Each agent has an inbox. To ask another agent something and get the answer in one call, use \
fabric_message_request (it waits for the reply). To hand work off without waiting, use \
fabric_message_send; its reply arrives later and you read it with fabric_message_receive \
source \"replies\". To take work sent to you, call fabric_message_receive (source \"inbox\"), \
handle each message, then pass its _stream_id to fabric_message_acknowledge; a message you \
do not acknowledge is given to you again after the visibility timeout. fabric_agents lists \
the agents (their exact ids and what they handle), fabric_message_peek looks at an inbox \
without taking anything, fabric_message_queue_status shows your inbox's state, and \
fabric_message_publish broadcasts on a topic. You always act as your own agent identity.";

/// The instructions for `identity`: who it is, then how the tools fit together.
fn instructions_for(identity: Option<&Identity>) -> String {
    match identity {
        Some(Identity::Agent(me)) => format!(
            "You are agent \"{me}\" on this bus: you send as \"{me}\" and receive what is sent to \"{me}\". {INSTRUCTIONS}"
        ),
        Some(Identity::Admin(name)) => format!(
            "You are connected as an admin ({name}): pass agent_id to say whose inbox a call is about, and from_agent to send as an agent. {INSTRUCTIONS}"
        ),
        None => INSTRUCTIONS.to_owned(),
    }
}

impl ServerHandler for FabricMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("fabric", env!("CARGO_PKG_VERSION"))
                    .with_title("Fabric message bus"),
            )
            .with_instructions(instructions_for(self.inner.identity.as_ref()))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        let mut result = self.negotiate_initialize(&request)?;
        // Over HTTP the identity is the request's: tell the model who it is.
        let identity = self.identity_of(&context);
        result.instructions = Some(instructions_for(identity.as_ref()));
        Ok(result)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        // Every tool fits on one page: no cursor this server gave out can come back.
        if let Some(cursor) = request.and_then(|r| r.cursor) {
            return Err(McpError::invalid_params(
                format!(
                    "invalid cursor {cursor:?}: tools/list has a single page, call it without a cursor"
                ),
                None,
            ));
        }
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
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| tools::Progress {
                token,
                peer: context.peer.clone(),
            });
        self.dispatch(&request.name, args, identity, context.ct.clone(), progress)
            .await
            .map(CallToolResponse::from)
    }
}
