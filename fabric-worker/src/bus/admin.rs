//! Administrative steps: [`Bus::setup`] (the function library) and
//! [`Bus::register_agent`] (an agent's inbox and outbox, with their groups).

use super::{Bus, agent_group};
use crate::error::Result;
use crate::keys;

impl Bus {
    /// Loads (or replaces) the fabric function library on the server — on every primary of a
    /// cluster. Needs a Redis user allowed `FUNCTION LOAD` (the admin of secure mode). Safe to
    /// run again: it is what `fabric setup` does. Returns the library's version.
    pub async fn setup(&self) -> Result<i64> {
        self.broker().load_library().await?;
        Ok(crate::broker::functions::VERSION)
    }

    /// Registers `agent`: creates its inbox with its default consumer group (and `group`, if
    /// given), and its outbox with the routers' group, so that a router delivers to it and
    /// reads from it at once. Existing streams and groups are left as they are.
    pub async fn register_agent(&self, agent: &str, group: Option<&str>) -> Result<()> {
        let group = agent_group(agent, group)?;
        let broker = self.broker();
        let inbox = keys::inbox(agent);
        broker
            .ensure_group(&inbox, &keys::default_group(agent))
            .await?;
        broker.ensure_group(&inbox, &group).await?;
        broker
            .ensure_group(&keys::outbox(agent), keys::ROUTER_GROUP)
            .await
    }
}
