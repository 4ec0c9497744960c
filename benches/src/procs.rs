//! Consumer processes: our worker (`__worker`) or the raw baseline (`__raw`), each a
//! separate OS process running this same executable.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::stats::ProcStats;

/// Which consumer implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// fabric-worker, default settings.
    Ours,
    /// The hand-written redis-crate consumer.
    Raw,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Raw => "raw",
        }
    }
}

/// Extra `FABRIC_*` variables for the next `Kind::Ours` consumers (the metrics scenario's
/// `FABRIC_METRICS_ADDR`, the agents scenario's `FABRIC_MAX_IN_FLIGHT`, the cluster
/// scenario's `FABRIC_CLUSTER`): the only ones they get besides `FABRIC_AGENTS`.
static OURS_ENV: std::sync::Mutex<EnvVars> = std::sync::Mutex::new(Vec::new());

/// Environment variables: name, value.
pub(crate) type EnvVars = Vec<(&'static str, String)>;

/// Sets (or, with an empty list, clears) the extra variables of our next consumers.
pub(crate) fn set_ours_env(vars: EnvVars) {
    *OURS_ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = vars;
}

/// Runs `f` with `vars` set for our consumers, and clears them afterwards (also on error).
pub(crate) async fn with_ours_env<T>(vars: EnvVars, f: impl Future<Output = T>) -> T {
    set_ours_env(vars);
    let r = f.await;
    set_ours_env(Vec::new());
    r
}

/// A running consumer process; killed (SIGKILL) if dropped while running.
#[derive(Debug)]
pub(crate) struct Consumer {
    child: Child,
    pid: u32,
    stats_file: PathBuf,
}

/// Starts a consumer serving `agents` (our worker) or their inbox streams (raw, through
/// `group`).
pub(crate) fn spawn(
    kind: Kind,
    url: &str,
    agents: &[String],
    group: &str,
    tmp: &Path,
) -> anyhow::Result<Consumer> {
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let stats_file = tmp.join(format!("stats-{}.json", uuid::Uuid::new_v4().simple()));
    // For profiling: BENCH_WRAP_OURS / BENCH_WRAP_RAW prefix the consumer's command line,
    // e.g. BENCH_WRAP_OURS="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p".
    let wrap_var = match kind {
        Kind::Ours => "BENCH_WRAP_OURS",
        Kind::Raw => "BENCH_WRAP_RAW",
    };
    let wrap: Vec<String> = std::env::var(wrap_var)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut cmd = match wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    // Default settings: no FABRIC_* tuning leaks in from the caller's environment.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FABRIC_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("REDIS_URL", url)
        .env("BENCH_STATS_FILE", &stats_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    match kind {
        Kind::Ours => {
            cmd.arg("__worker").env("FABRIC_AGENTS", agents.join(","));
            let extra = OURS_ENV
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            for (k, v) in extra {
                cmd.env(k, v);
            }
        }
        Kind::Raw => {
            let streams: Vec<String> = agents
                .iter()
                .map(|a| fabric_worker::keys::inbox(a))
                .collect();
            cmd.arg("__raw")
                .env("BENCH_STREAMS", streams.join(","))
                .env("BENCH_GROUP", group);
        }
    }
    let child = cmd.spawn().context("spawning a consumer process")?;
    let pid = child.id().context("consumer pid")?;
    Ok(Consumer {
        child,
        pid,
        stats_file,
    })
}

impl Consumer {
    /// TCP connections this process holds to `port` (any local address): its socket file
    /// descriptors (`/proc/<pid>/fd`) matched by inode against `/proc/<pid>/net/tcp` and
    /// `tcp6`, remote port = `port`, in any state but LISTEN.
    pub(crate) fn connections_to(&self, port: u16) -> anyhow::Result<usize> {
        let mut inodes = std::collections::HashSet::new();
        for fd in std::fs::read_dir(format!("/proc/{}/fd", self.pid))? {
            // An fd closed meanwhile has no link any more: skip it.
            let Ok(target) = std::fs::read_link(fd?.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
        let mut n = 0;
        for table in ["tcp", "tcp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{}/net/{table}", self.pid))
            else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let (Some(rem), Some(st), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else {
                    continue;
                };
                let rport = rem
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                if rport == Some(port) && *st != "0A" && inodes.contains(*inode) {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Fails if the process has already exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("consumer process {} exited early: {status}", self.pid);
        }
        Ok(())
    }

    /// Resident set size now, in KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmRSS:")
    }

    /// Peak resident set size so far, in KiB (`VmHWM`).
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid, "VmHWM:")
    }

    /// CPU time (user + system, all threads) used so far, ms (`/proc/<pid>/stat`, in
    /// clock ticks of 10 ms).
    pub(crate) fn cpu_ms(&self) -> Option<f64> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 * 10.0)
    }

    /// SIGTERM, wait for a graceful exit (at most 40 s), read the stats file.
    pub(crate) async fn stop(mut self) -> anyhow::Result<ProcStats> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let exit = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .context("consumer did not stop within 40 s of SIGTERM")??;
        // A profiler wrapper (BENCH_WRAP_*) may exit with the signal's status even though
        // the consumer stopped cleanly and wrote its stats: the stats file is the proof.
        let bytes = match std::fs::read(&self.stats_file) {
            Ok(b) => b,
            Err(e) if exit.success() => {
                return Err(e).with_context(|| format!("reading {}", self.stats_file.display()));
            }
            Err(_) => bail!("consumer process {} failed: {exit}", self.pid),
        };
        let _ = std::fs::remove_file(&self.stats_file);
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A `kB` line of `/proc/<pid>/status`.
pub(crate) fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
