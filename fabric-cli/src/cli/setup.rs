//! `fabric setup [--agent ID]…`: the administrative step. Loads (or upgrades) the function
//! library, and registers agents (their inboxes and outboxes, with their groups).

use serde_json::json;

use super::{SetupArgs, Target, validate_agent};
use crate::error::Result;
use crate::output;

pub(crate) async fn run(at: &Target, json: bool, args: SetupArgs) -> Result<()> {
    for a in &args.agents {
        validate_agent(a)?;
    }
    let bus = at.connect().await?;
    let version = bus.setup().await?;
    for a in &args.agents {
        bus.register_agent(a, None).await?;
    }
    if json {
        output::print_json(&json!({"library_version": version, "registered": args.agents}))
    } else {
        let mut text = format!(
            "loaded the fabric function library (version {version}) on {}",
            bus.url()
        );
        if !args.agents.is_empty() {
            text.push_str(&format!("\nregistered {}", args.agents.join(", ")));
        }
        output::println(&text)
    }
}
