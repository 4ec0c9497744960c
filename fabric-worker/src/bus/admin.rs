//! Administrative steps: [`Bus::setup`] (the function library),
//! [`Bus::register_agent`] (an agent's inbox and outbox, with their groups) and
//! [`Bus::remove_idle_consumers`].

use super::{Bus, agent_group};
use crate::broker::wire;
use crate::error::{Error, Result};
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

    /// Removes the consumers of `group` on `agent`'s inbox whose name starts with `prefix`,
    /// that have nothing pending and have been idle at least `min_idle_ms`. Returns their
    /// names.
    pub async fn remove_idle_consumers(
        &self,
        agent: &str,
        group: &str,
        prefix: &str,
        min_idle_ms: u64,
    ) -> Result<Vec<String>> {
        let group = agent_group(agent, Some(group))?;
        self.remove_consumers_where(&keys::inbox(agent), &group, |name, idle| {
            name.starts_with(prefix) && idle >= min_idle_ms
        })
        .await
    }

    /// Removes the consumers of `group` on `stream` that have nothing pending and for which
    /// `remove(name, idle ms)` says so. Returns their names.
    pub(crate) async fn remove_consumers_where(
        &self,
        stream: &str,
        group: &str,
        remove: impl Fn(&str, u64) -> bool,
    ) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let v: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(group)
            .query_async(&mut conn)
            .await;
        let v = match v {
            Ok(v) => v,
            Err(e) if wire::is_nogroup(&e) => return Ok(Vec::new()),
            Err(e) => return Err(Error::redis("XINFO CONSUMERS", stream, e)),
        };
        let mut removed = Vec::new();
        for c in wire::as_array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_map)
        {
            let name = c.get("name").and_then(wire::as_string).unwrap_or_default();
            let pending = c.get("pending").and_then(wire::as_u64).unwrap_or(1);
            let idle = c.get("idle").and_then(wire::as_u64).unwrap_or(0);
            if pending == 0 && remove(&name, idle) {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(group)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XGROUP DELCONSUMER", stream, e))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Gives Redis user `user` the password `password` on the live server (an admin step:
    /// `ACL SETUSER`). Without `keep_old` every other password of the user stops working at
    /// once (new logins only: connections already open stay, unless `disconnect`);
    /// with `keep_old` the old ones keep working too, for a rolling restart. `disconnect`
    /// closes the user's open connections (`CLIENT KILL USER`): its clients reconnect, and
    /// must then log in with a password that works. When the server loads its users from an
    /// ACL file, the change is saved there (`ACL SAVE`). Returns whether it was saved.
    pub async fn set_user_password(
        &self,
        user: &str,
        password: &str,
        keep_old: bool,
        disconnect: bool,
    ) -> Result<bool> {
        if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "user",
                user,
                "must be a Redis user name without spaces",
            ));
        }
        crate::acl::rules(
            &crate::acl::Role::Monitor,
            super::Mode::Direct,
            password,
            &[],
        )?;
        let mut conn = self.conn();
        let exists: redis::Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(user)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ACL GETUSER", user, e))?;
        if matches!(exists, redis::Value::Nil) {
            return Err(Error::invalid(
                "user",
                user,
                "no such Redis user on this server (create it from the ACL file `fabric acl generate` writes)",
            ));
        }
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(user);
        if !keep_old {
            cmd.arg("resetpass");
        }
        cmd.arg(crate::acl::password_hash_rule(password));
        let _: () = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ACL SETUSER", user, e))?;
        if disconnect {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(user)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("CLIENT KILL USER", user, e))?;
        }
        let aclfile: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("CONFIG GET aclfile", user, e))?;
        let has_file = aclfile.get(1).is_some_and(|f| !f.is_empty());
        if has_file {
            let _: () = redis::cmd("ACL")
                .arg("SAVE")
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("ACL SAVE", user, e))?;
        }
        Ok(has_file)
    }
}
