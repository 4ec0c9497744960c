//! `fabric-bench __router`: the secure-mode router under test, a process of its own (as
//! `fabric router` runs), against `REDIS_URL`, until SIGTERM.

use std::time::Duration;

use fabric_worker::router::Router;

/// Runs the router until SIGTERM/SIGINT.
pub(crate) fn main() -> anyhow::Result<()> {
    crate::init_tracing("warn");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let router = Router::builder()
            .url(fabric_worker::bus::redis_url_from_env())
            .scan_interval(Duration::from_millis(100))
            .build()
            .await?;
        let stop = async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
        };
        router.run_until(stop).await?;
        anyhow::Ok(())
    })
}

/// A running router process; killed if dropped while running.
#[derive(Debug)]
pub(crate) struct RouterProc {
    child: tokio::process::Child,
}

impl RouterProc {
    /// Starts `fabric-bench __router` against `url`.
    pub(crate) fn spawn(url: &str) -> anyhow::Result<RouterProc> {
        let exe = std::env::current_exe()?;
        let child = tokio::process::Command::new(exe)
            .arg("__router")
            .env("REDIS_URL", url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(RouterProc { child })
    }

    /// Stops it (SIGTERM) and waits.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Ok(())
    }
}
