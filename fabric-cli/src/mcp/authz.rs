//! Who may act for whom: the one rule every tool asks.
//!
//! An agent acts only as itself: it sends and publishes as itself, and reads, acknowledges
//! and inspects only its own inbox. An admin may act for any agent.

use super::auth::Identity;
use super::params::AgentId;
use super::tools::ToolError;

/// What a tool call wants to do.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Act<'a> {
    /// Send or publish as `from_agent` (default: the caller).
    SendAs(Option<&'a AgentId>),
    /// Use `agent_id`'s inbox (default: the caller's).
    UseInbox(Option<&'a AgentId>),
}

/// The agent the call acts as (the sender, or the inbox owner), or why it may not.
pub(crate) fn authorize(identity: &Identity, act: Act<'_>) -> Result<String, ToolError> {
    match (identity, act) {
        (Identity::Agent(me), Act::SendAs(None) | Act::UseInbox(None)) => Ok(me.clone()),
        (Identity::Agent(me), Act::SendAs(Some(f)) | Act::UseInbox(Some(f))) if f.0 == *me => {
            Ok(me.clone())
        }
        (Identity::Agent(me), Act::SendAs(Some(f))) => Err(ToolError(format!(
            "refused: from_agent {:?} is not your identity; you are connected as agent {me:?} and can only send as yourself. Omit from_agent (or set it to {me:?}).",
            f.0
        ))),
        (Identity::Agent(me), Act::UseInbox(Some(a))) => Err(ToolError(format!(
            "access denied: you are connected as agent {me:?} and may only use your own inbox, not {:?}'s. Omit agent_id (or set it to {me:?}).",
            a.0
        ))),
        (Identity::Admin(_), Act::SendAs(Some(a)) | Act::UseInbox(Some(a))) => Ok(a.0.clone()),
        (Identity::Admin(name), Act::SendAs(None)) => {
            if fabric_worker::keys::validate_agent(name).is_ok() {
                Ok(name.clone())
            } else {
                Err(ToolError(
                    "from_agent is required when acting as admin".into(),
                ))
            }
        }
        (Identity::Admin(_), Act::UseInbox(None)) => Err(ToolError(
            "agent_id is required when acting as admin".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId(s.into())
    }

    #[test]
    fn agents_act_as_themselves_and_admins_for_anyone() {
        let me = Identity::Agent("coder".into());
        let admin = Identity::Admin("admin".into());
        let (coder, percy) = (id("coder"), id("percy"));
        assert_eq!(authorize(&me, Act::SendAs(None)).unwrap(), "coder");
        assert_eq!(authorize(&me, Act::SendAs(Some(&coder))).unwrap(), "coder");
        let e = authorize(&me, Act::SendAs(Some(&percy))).unwrap_err().0;
        assert!(e.starts_with("refused: from_agent \"percy\""), "{e}");
        assert_eq!(
            authorize(&admin, Act::SendAs(Some(&percy))).unwrap(),
            "percy"
        );
        assert_eq!(authorize(&admin, Act::SendAs(None)).unwrap(), "admin");
        assert_eq!(authorize(&me, Act::UseInbox(None)).unwrap(), "coder");
        let e = authorize(&me, Act::UseInbox(Some(&percy))).unwrap_err().0;
        assert!(e.starts_with("access denied"), "{e}");
        assert!(authorize(&admin, Act::UseInbox(None)).is_err());
        assert_eq!(
            authorize(&admin, Act::UseInbox(Some(&percy))).unwrap(),
            "percy"
        );
        let nameless = Identity::Admin("ops team".into());
        let e = authorize(&nameless, Act::SendAs(None)).unwrap_err().0;
        assert!(e.contains("from_agent is required"), "{e}");
    }
}
