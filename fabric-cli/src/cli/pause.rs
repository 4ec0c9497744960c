//! `fabric pause` and `fabric resume`: stop and restart an agent's workers starting messages.

use serde_json::json;

use super::{AgentArgs, Target, validate_agent};
use crate::error::Result;
use crate::output;

pub(crate) async fn run(at: &Target, json: bool, args: AgentArgs, pause: bool) -> Result<()> {
    let agent = &args.agent;
    validate_agent(agent)?;
    let bus = at.connect().await?;
    super::status::require_inbox(&bus, agent).await?;
    let changed = if pause {
        bus.pause(agent).await?
    } else {
        bus.resume(agent).await?
    };
    if json {
        return output::print_json(
            &json!({"agent_id": agent, "paused": pause, "changed": changed}),
        );
    }
    let text = match (pause, changed) {
        (true, true) => format!(
            "paused {agent}: its workers start no new messages within a second (resume with `fabric resume {agent}`)"
        ),
        (true, false) => format!("{agent} was already paused"),
        (false, true) => format!("resumed {agent}: its workers read again within a second"),
        (false, false) => format!("{agent} was not paused"),
    };
    output::println(&text)
}
