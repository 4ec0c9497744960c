//! Short-lived Redis credentials, issued from an identity already checked (the seed's
//! "validate agent JWT, then issue Redis ACL token"): [`Bus::issue_credentials`] creates a
//! Redis user `cred.<agent>.<expiry ms>.<nonce>` with exactly the rules of the agent's own
//! user, and [`Bus::sweep_credentials`] deletes it after its expiry (Redis closes its
//! connections then). An admin's bus runs these.

use std::time::Duration;

use super::{Bus, Mode};
use crate::acl::{self, Role};
use crate::broker::wire;
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::keys;

/// Prefix of the Redis users [`Bus::issue_credentials`] creates.
pub const CREDENTIAL_USER_PREFIX: &str = "cred.";

/// Shortest and longest lifetime of issued credentials.
pub const CREDENTIAL_LIFETIME: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// `(agent, expiry ms)` of an issued user's name.
pub(crate) fn parse_user(user: &str) -> Option<(&str, u64)> {
    let rest = user.strip_prefix(CREDENTIAL_USER_PREFIX)?;
    let mut parts = rest.split('.');
    let agent = parts.next()?;
    let expiry = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((agent, expiry))
}

impl Bus {
    /// Creates a Redis user for `agent` that works for `lifetime`: the rules of the agent's
    /// own user in `mode` (`topics` as in [`acl::rules`]), with a new random password. The
    /// user is deleted by the next [`Bus::sweep_credentials`] after it expires. Needs an
    /// admin's bus (`ACL SETUSER`).
    pub async fn issue_credentials(
        &self,
        agent: &str,
        mode: Mode,
        lifetime: Duration,
        topics: &[&str],
    ) -> Result<Credentials> {
        keys::validate_agent(agent)?;
        if !CREDENTIAL_LIFETIME.contains(&lifetime) {
            return Err(Error::invalid(
                "lifetime",
                &format!("{}s", lifetime.as_secs()),
                "must be between 1 s and 24 h",
            ));
        }
        let password = acl::generate_password();
        let expires_at_ms = crate::time::now_ms() + crate::time::millis(lifetime);
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..12];
        // Dots: a user name goes into a URL (`redis://user:password@…`), where `:` would
        // end it; agent ids have no dots.
        let user = format!("{CREDENTIAL_USER_PREFIX}{agent}.{expires_at_ms}.{nonce}");
        let rules = acl::rules(&Role::Agent(agent.to_owned()), mode, &password, topics)?;
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(&user);
        for r in acl::hash_passwords(rules) {
            cmd.arg(r);
        }
        let _: () = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("ACL SETUSER", &user, e))?;
        tracing::info!(agent, user = %user, expires_at_ms, "issued short-lived credentials");
        Ok(Credentials {
            agent: agent.to_owned(),
            user,
            password,
            expires_at_ms,
        })
    }

    /// Deletes the issued users whose time is up (Redis closes their connections), and,
    /// with `agent`, every issued user of that agent whatever its expiry (revocation).
    /// Returns the users deleted.
    pub async fn sweep_credentials(&self, agent: Option<&str>) -> Result<Vec<String>> {
        let now = crate::time::now_ms();
        let mut conn = self.conn();
        let v: redis::Value = redis::cmd("ACL")
            .arg("USERS")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ACL USERS", "", e))?;
        let gone: Vec<String> = wire::as_array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_string)
            .filter(|u| {
                parse_user(u)
                    .is_some_and(|(a, expiry)| agent.map_or(expiry <= now, |revoked| revoked == a))
            })
            .collect();
        if !gone.is_empty() {
            let _: i64 = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&gone)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("ACL DELUSER", "", e))?;
            tracing::info!(users = ?gone, "deleted expired or revoked credentials");
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_user_names_carry_agent_and_expiry() {
        assert_eq!(
            parse_user("cred.percy.1795860000000.abcdef012345"),
            Some(("percy", 1_795_860_000_000))
        );
        assert_eq!(parse_user("percy"), None);
        assert_eq!(parse_user("cred.percy.soon.x"), None);
        assert_eq!(parse_user("cred.percy.1"), None);
        let c = Credentials {
            agent: "percy".into(),
            user: "cred.percy.1.x".into(),
            password: "hunter2".into(),
            expires_at_ms: 1,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
