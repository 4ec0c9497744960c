//! `fabric acl generate` (a Redis ACL file for the agents and roles) and `fabric acl rotate`
//! (a new password on a live server).

use std::io::Write;
use std::path::Path;

use fabric_worker::acl::{self, Role};
use fabric_worker::bus::Mode;
use serde::Deserialize;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Target, validate_agent};
use crate::error::{Error, Result};
use crate::output;

/// `fabric acl`.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Write a Redis ACL file (redis-server --aclfile): admin, router, MCP server, monitor and one user per agent
    #[command(
        after_help = "Examples:\n  fabric --mode secure acl generate --agent percy --agent coder --out users.acl --passwords-out passwords.txt\n  fabric acl generate --config fabric-acl.toml --out users.acl   # agents, mode and topics from a file\n  fabric acl generate --agent percy --placeholder-passwords       # an example file (change-me-<user>)\n\nThe file stores only #<sha256> hashes. Passwords are generated, or taken from FABRIC_ACL_PASSWORD_<USER>\n(e.g. FABRIC_ACL_PASSWORD_PERCY, FABRIC_ACL_PASSWORD_FABRIC_ROUTER), and shown once: in --passwords-out\n(created readable by you only), else on stdout when --out is given, else on stderr.\n\nfabric-acl.toml:\n  mode = \"secure\"                 # or \"direct\" (default: --mode)\n  agents = [\"percy\", \"coder\"]\n  topics = [\"analytics.*\", \"system.*\", \"shared:*\"]   # optional"
    )]
    Generate(AclGenerateArgs),
    /// Change a Redis user's password on the live server (connect as fabric-admin)
    #[command(
        after_help = "Examples:\n  fabric acl rotate percy --disconnect --password-out percy.pw   # compromised: cut it off now\n  fabric acl rotate percy --keep-old --password-out percy.pw     # rolling: old and new both work\n  fabric acl rotate percy --password-file percy.pw               # ...then only the new one\n\nMessages are never lost: they wait in Redis while the agent's workers restart with the new password,\nand what a cut-off worker had not acknowledged is delivered again."
    )]
    Rotate(AclRotateArgs),
}

/// `fabric acl generate`.
#[derive(Debug, Args)]
pub struct AclGenerateArgs {
    /// An agent to create a user for; repeatable (added to the config file's)
    #[arg(long = "agent", value_name = "ID")]
    pub agents: Vec<String>,

    /// A TOML file with `agents`, and optionally `mode` and `topics`
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A Pub/Sub topic pattern agents may use; repeatable (default analytics.*, system.*, shared:*)
    #[arg(long = "topic", value_name = "PATTERN")]
    pub topics: Vec<String>,

    /// Write the ACL file here (default: stdout)
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Write the clear passwords here, readable by you only (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub passwords_out: Option<PathBuf>,

    /// Use change-me-<user> as every password (for an example file; never deploy it as is)
    #[arg(long)]
    pub placeholder_passwords: bool,
}

/// `fabric acl rotate`.
#[derive(Debug, Args)]
pub struct AclRotateArgs {
    /// The Redis user (an agent id, or fabric-router, fabric-mcp, fabric-monitor, fabric-admin)
    #[arg(value_name = "USER")]
    pub user: String,

    /// Keep the old passwords working too (for a rolling restart; finish with --password-file)
    #[arg(long)]
    pub keep_old: bool,

    /// Close the user's open connections now (they must log in again)
    #[arg(long)]
    pub disconnect: bool,

    /// Use the password in this file instead of generating one
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Write the new password here, readable by you only (default: stdout)
    #[arg(long, value_name = "FILE")]
    pub password_out: Option<PathBuf>,
}

/// `fabric-acl.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
}

pub(crate) async fn run(at: &Target, cmd: AclCommand) -> Result<()> {
    match cmd {
        AclCommand::Generate(args) => generate(at.mode, &args),
        AclCommand::Rotate(args) => rotate(at, &args).await,
    }
}

/// The variable a password of `user` may come from: `FABRIC_ACL_PASSWORD_<USER>`.
pub(crate) fn password_var(user: &str) -> String {
    let tail: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FABRIC_ACL_PASSWORD_{tail}")
}

fn read_config(path: &Path) -> Result<AclConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Writes `text` to `path`, readable and writable by its owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    // An existing file keeps its mode on open: narrow it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

fn generate(global_mode: Mode, args: &AclGenerateArgs) -> Result<()> {
    let config = match &args.config {
        Some(p) => read_config(p)?,
        None => AclConfig::default(),
    };
    let mode = match &config.mode {
        Some(m) => m
            .parse::<Mode>()
            .map_err(|e| Error::Config(format!("mode in the config file: {e}")))?,
        None => global_mode,
    };
    let mut agents = config.agents.clone();
    agents.extend(args.agents.iter().cloned());
    if agents.is_empty() {
        return Err(Error::Usage(
            "no agents: pass --agent ID (repeatable) or a --config file with agents = [...]".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &agents {
        validate_agent(a)?;
        if [
            acl::ADMIN_USER,
            acl::ROUTER_USER,
            acl::MCP_USER,
            acl::MONITOR_USER,
            "default",
        ]
        .contains(&a.as_str())
        {
            return Err(Error::Usage(format!(
                "agent id {a:?} is the name of a built-in user; choose another id"
            )));
        }
        if !seen.insert(a.clone()) {
            return Err(Error::Usage(format!("agent {a:?} is listed twice")));
        }
    }
    let mut topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    topics.extend(args.topics.iter().map(String::as_str));

    let mut roles: Vec<(String, Role)> = vec![(acl::ADMIN_USER.into(), Role::Admin)];
    if mode == Mode::Secure {
        roles.push((acl::ROUTER_USER.into(), Role::Router));
    }
    roles.push((acl::MCP_USER.into(), Role::McpServer));
    roles.push((acl::MONITOR_USER.into(), Role::Monitor));
    roles.extend(agents.iter().map(|a| (a.clone(), Role::Agent(a.clone()))));

    let mut users = vec![(
        "default".to_owned(),
        acl::hash_passwords(acl::default_user_rules()),
    )];
    let mut passwords = Vec::new();
    for (user, role) in &roles {
        let password = if args.placeholder_passwords {
            format!("change-me-{user}")
        } else {
            match std::env::var(password_var(user)) {
                Ok(p) if !p.is_empty() => p,
                _ => acl::generate_password(),
            }
        };
        let rules = acl::rules(role, mode, &password, &topics)
            .map_err(|e| Error::Usage(format!("user {user}: {e} (from {})", password_var(user))))?;
        users.push((user.clone(), acl::hash_passwords(rules)));
        passwords.push((user.clone(), password));
    }
    let file = acl::file(&users);
    match &args.out {
        Some(p) => std::fs::write(p, &file)
            .map_err(|e| Error::io(format!("cannot write {}", p.display()), e))?,
        None => output::print(&file)?,
    }
    let names: Vec<&str> = roles.iter().map(|(u, _)| u.as_str()).collect();
    eprintln!(
        "{}: {} users for {} mode: {} (and `default`, with a random password nobody is given)",
        args.out.as_ref().map_or_else(
            || "ACL file on stdout".into(),
            |p| format!("wrote {}", p.display())
        ),
        names.len(),
        mode.name(),
        names.join(", ")
    );
    if args.placeholder_passwords {
        eprintln!("every password is change-me-<user>: an example only, never deploy it as is");
        return Ok(());
    }
    let listing: String = passwords
        .iter()
        .map(|(u, p)| format!("{u} {p}\n"))
        .collect();
    match (&args.passwords_out, &args.out) {
        (Some(p), _) => {
            write_private(p, &listing)?;
            eprintln!(
                "passwords written to {} (readable by you only); they are not stored anywhere else",
                p.display()
            );
        }
        (None, Some(_)) => {
            eprintln!("passwords (shown once; they are not stored anywhere else):");
            output::print(&listing)?;
        }
        (None, None) => {
            eprintln!("passwords (shown once; they are not stored anywhere else):");
            eprint!("{listing}");
        }
    }
    Ok(())
}

async fn rotate(at: &Target, args: &AclRotateArgs) -> Result<()> {
    let password = match &args.password_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?
            .trim()
            .to_owned(),
        None => acl::generate_password(),
    };
    let bus = at.connect().await?;
    let saved = bus
        .set_user_password(&args.user, &password, args.keep_old, args.disconnect)
        .await?;
    match &args.password_out {
        Some(p) => write_private(p, &format!("{password}\n"))?,
        None if args.password_file.is_none() => output::println(&password)?,
        None => {}
    }
    let mut notes = vec![if args.keep_old {
        "the old passwords still work too (finish with --password-file once every worker uses the new one)".to_owned()
    } else {
        "old passwords no longer log in".to_owned()
    }];
    if args.disconnect {
        notes.push("its open connections were closed".into());
    }
    notes.push(if saved {
        "saved to the server's ACL file".into()
    } else {
        "the server has no ACL file: the change lives in memory until you update its configuration"
            .into()
    });
    eprintln!("new password for {}: {}", args.user, notes.join("; "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_variables() {
        assert_eq!(password_var("percy"), "FABRIC_ACL_PASSWORD_PERCY");
        assert_eq!(
            password_var("fabric-router"),
            "FABRIC_ACL_PASSWORD_FABRIC_ROUTER"
        );
    }
}
