//! `fabric router`: the router of secure mode, until Ctrl-C or SIGTERM.

use std::time::Duration;

use fabric_worker::router::{AllowList, Router};

use super::{RouterArgs, Target};
use crate::error::{Error, Result};

/// The allow-list the flags describe.
pub(crate) fn allow_list(pairs: &[String]) -> Result<AllowList> {
    let mut allow = AllowList::everyone();
    for p in pairs {
        let (from, to) =
            AllowList::parse_pair(p).map_err(|e| Error::Usage(format!("--allow: {e}")))?;
        allow = allow.allow(from, to);
    }
    Ok(allow)
}

pub(crate) async fn run(at: &Target, args: RouterArgs) -> Result<()> {
    let allow = allow_list(&args.allow)?;
    let bus = at.connect().await?;
    let router = Router::builder()
        .bus(bus)
        .allow(allow)
        .max_entry_bytes(args.max_entry_bytes)
        .dedup_window(Duration::from_secs(args.dedup_window_secs))
        .reclaim_idle(Duration::from_millis(args.reclaim_idle_ms))
        .build()
        .await?;
    eprintln!(
        "fabric router {} delivering outboxes (Ctrl-C to stop)",
        router.consumer()
    );
    router.run_until(super::mcp::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_flags() {
        let a = allow_list(&["coder:percy".into()]).unwrap();
        assert!(a.allows("coder", "percy"));
        assert!(!a.allows("percy", "coder"));
        assert!(allow_list(&[]).unwrap().allows("x", "y"));
        let e = allow_list(&["coder".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--allow: invalid allowed pair"), "{e}");
    }
}
