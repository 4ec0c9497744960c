//! [`Mode`]: how messages travel (re-exported as `bus::Mode`).

use crate::error::{Error, Result};

/// How messages travel between agents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Senders append straight to the recipient's inbox, as the Python bus does: for one
    /// trusted team (an agent's credentials can write other agents' inboxes).
    #[default]
    Direct,
    /// Senders append to their own outbox; the router (`fabric router`) delivers each entry,
    /// stamping the authenticated sender. An agent's credentials give rights on its own keys
    /// only (see `docs/security.md`).
    Secure,
}

impl Mode {
    /// `direct` or `secure`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Secure => "secure",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "direct" => Ok(Mode::Direct),
            "secure" => Ok(Mode::Secure),
            _ => Err(Error::invalid("mode", s, "use direct or secure")),
        }
    }
}
