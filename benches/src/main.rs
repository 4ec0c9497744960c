//! `fabric-bench`: fabric-worker's benchmark suite, with a raw-Redis baseline measured in
//! the same run against the same Redis, every figure of ours reported as a ratio to it.
//!
//! ```text
//! cargo run --release -p benches --bin fabric-bench             # full run (a few minutes)
//! cargo run -p benches --bin fabric-bench -- --quick            # smoke run (CI)
//! cargo run --release -p benches --bin fabric-bench -- --only drain,latency --json
//! ```
//!
//! The consumers under test run as separate processes of this same executable:
//! `fabric-bench __worker` (our worker, default settings), `fabric-bench __raw` (the
//! baseline) and, for the secure scenario, `fabric-bench __router` (secure mode's router). One executable, so `cargo run` always runs them at the same build — a
//! sibling binary could be stale or missing, since `cargo run --bin` builds only one.
//! See `benches/README.md` for what each figure measures.
// Statistics: counts and durations become `f64` and back for rates, medians and
// percentiles; those conversions are the point here, so the cast lints are off.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

/// The allocator of every process the benchmark runs (ours, the raw baseline and the
/// router: one executable), as the README advises for workers. glibc's `malloc` on a
/// multi-threaded runtime cost our worker about a third of its drain rate and the raw
/// consumer nothing measurable (benches/README.md); `--features system-alloc` measures with it.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod env;
mod harness;
mod procs;
mod raw_mode;
mod report;
mod router_mode;
mod scenarios;
mod server;
mod stats;
mod watch;
mod worker_mode;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Parser;

use crate::harness::Env;
use crate::report::{Machine, Report};
use crate::scenarios::{Shared, Sizes};
use crate::server::RedisServer;

const SCENARIOS: [&str; 12] = [
    "drain", "enqueue", "latency", "secure", "scale", "growth", "memory", "delayed", "metrics",
    "replicas", "agents", "cluster",
];

/// Benchmarks fabric-worker against a hand-written raw-Redis consumer and producer.
#[derive(Debug, Parser)]
#[command(name = "fabric-bench", version)]
struct Cli {
    /// Smoke mode: tiny counts, finishes in seconds; proves the benchmark works (CI).
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Only these scenarios (comma-separated): drain, enqueue, latency, secure, scale, growth,
    /// memory, delayed, metrics, replicas, agents, cluster.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Use this Redis instead of starting one (its data is left alone except the
    /// benchmark's own `agent:fb<run>-*` keys, which are deleted).
    #[arg(long)]
    redis_url: Option<String>,
    /// The redis-server executable to start when no --redis-url is given.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Messages in the drain and scale measurements (default 100,000; 2,000 with --quick).
    #[arg(long)]
    drain_messages: Option<usize>,
    /// Repetitions of the drain and enqueue measurements (the median is reported);
    /// default 3, or 1 with --quick.
    #[arg(long)]
    repeat: Option<usize>,
}

/// Logs to stderr; `RUST_LOG` overrides `default`.
pub(crate) fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // The consumer processes the benchmark starts (hidden modes).
    match std::env::args().nth(1).as_deref() {
        Some("__worker") => return exit(worker_mode::main()),
        Some("__raw") => return exit(raw_mode::main()),
        Some("__router") => return exit(router_mode::main()),
        _ => {}
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit(Err(e.into())),
    };
    exit(rt.block_on(run(cli)))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    for s in &cli.only {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}; choose from {}",
                SCENARIOS.join(", ")
            );
        }
    }
    let selected = |s: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == s);
    let (server, url) = match &cli.redis_url {
        Some(u) => (None, u.clone()),
        None => {
            let s = RedisServer::start(&cli.redis_server).await?;
            let u = s.url.clone();
            (Some(s), u)
        }
    };
    let repeat = cli.repeat.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    let env = Env::new(url, cli.quick, repeat).await?;
    let mut sizes = Sizes::new(cli.quick);
    if let Some(n) = cli.drain_messages {
        sizes.drain = n.max(1);
        sizes.scale = n.max(1);
    }
    let mut report = Report {
        machine: Some(machine(&env, server.as_ref()).await?),
        ..Report::default()
    };
    let mut shared = Shared::default();
    let work = async {
        for s in SCENARIOS {
            if !selected(s) {
                continue;
            }
            eprintln!("== {s}");
            match s {
                "drain" => scenarios::drain(&env, &sizes, &mut report, &mut shared).await?,
                "enqueue" => scenarios::enqueue(&env, &sizes, &mut report).await?,
                "latency" => scenarios::latency(&env, &sizes, &mut report).await?,
                "secure" => scenarios::secure(&env, &sizes, &mut report).await?,
                "scale" => scenarios::scale(&env, &sizes, &mut report, &mut shared).await?,
                "growth" => scenarios::growth(&env, &sizes, &mut report).await?,
                "memory" => scenarios::memory(&env, &sizes, &mut report, &mut shared).await?,
                "delayed" => scenarios::delayed(&env, cli.quick, &mut report).await?,
                "metrics" => scenarios::metrics(&env, &sizes, &mut report).await?,
                "replicas" => {
                    scenarios::replicas(&env, &sizes, &cli.redis_server, &mut report).await?;
                }
                "agents" => scenarios::agents(&env, &sizes, &mut report).await?,
                "cluster" => {
                    scenarios::cluster(&env, &sizes, &cli.redis_server, &mut report).await?;
                }
                _ => unreachable!(),
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    report.elapsed_s = started.elapsed().as_secs_f64();
    if result.is_err() && !report.rows.is_empty() {
        eprintln!("(partial results)");
    }
    if cli.json {
        // The table goes to stderr for whoever watches; stdout is the JSON document.
        eprintln!("{}", report.render());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.render());
    }
    drop(env);
    drop(server);
    result
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn machine(env: &Env, server: Option<&RedisServer>) -> anyhow::Result<Machine> {
    let mut conn = env.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .unwrap_or("?")
            .trim()
            .to_owned()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let loadavg = read("/proc/loadavg");
    Ok(Machine {
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_model,
        memory_gib: mem_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_avg_at_start: loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        redis_version: format!("redis-server {}", field("redis_version")),
        redis: match server {
            Some(s) => format!(
                "started by the benchmark on {} (pid {}), --save \"\" --appendonly no; same machine, loopback TCP",
                s.url,
                s.pid()
            ),
            None => "given with --redis-url".into(),
        },
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        mode: if env.quick { "quick (smoke)" } else { "full" },
    })
}
