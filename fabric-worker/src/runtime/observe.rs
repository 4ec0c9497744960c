//! A worker's metrics and health: what the builder turns on (`metrics_addr`,
//! `FABRIC_METRICS_ADDR`, `metrics(true)`), and the tasks that serve and sample them while
//! the worker runs. The recording itself is in `crate::metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::env::Vars;
use crate::error::{Error, Result};

/// The environment variable of the metrics address.
pub(crate) const METRICS_ADDR_VAR: &str = "FABRIC_METRICS_ADDR";

/// How often the queue gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// `FABRIC_METRICS_ADDR`, parsed (`HOST:PORT` with an IP host, e.g. `127.0.0.1:9464`).
pub(super) fn addr_from<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<Option<SocketAddr>> {
    let Some(s) = v.string(METRICS_ADDR_VAR) else {
        return Ok(None);
    };
    parse_addr(&s).map(Some)
}

fn parse_addr(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    let localhost = s
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"));
    localhost.as_deref().unwrap_or(s).parse().map_err(|_| {
        Error::invalid(
            METRICS_ADDR_VAR,
            s,
            "not an address to listen on: expected IP:PORT, e.g. 127.0.0.1:9464 (loopback only) or 0.0.0.0:9464 (every interface)",
        )
    })
}

/// What a worker does about metrics, decided by its builder.
#[derive(Debug, Default)]
pub(super) struct Observe {
    /// Record metrics (an address is set, or `metrics(true)`).
    on: bool,
    /// The bound address to serve them at.
    #[cfg(feature = "prometheus")]
    listener: Option<crate::metrics::MetricsListener>,
}

impl Observe {
    /// Turns metrics on as asked: with an address, installs the Prometheus recorder and binds
    /// it (an address in use is an error now, not once running); with `record` alone, records
    /// into the application's own recorder.
    pub(super) async fn prepare(addr: Option<SocketAddr>, record: bool) -> Result<Observe> {
        let Some(addr) = addr else {
            if record {
                crate::metrics::enable();
            }
            return Ok(Observe {
                on: record,
                #[cfg(feature = "prometheus")]
                listener: None,
            });
        };
        #[cfg(feature = "prometheus")]
        {
            let listener = crate::metrics::bind(addr).await?;
            Ok(Observe {
                on: true,
                listener: Some(listener),
            })
        }
        #[cfg(not(feature = "prometheus"))]
        {
            Err(Error::Config(format!(
                "{METRICS_ADDR_VAR} / metrics_addr ({addr}) needs fabric-worker's `prometheus` feature: add `features = [\"prometheus\"]` to the fabric-worker dependency, or record into your own recorder with metrics(true)"
            )))
        }
    }

    /// Starts serving and sampling, for `agents`' inboxes read by `group` (`None`: each
    /// agent's default group); the tasks end when `stop` is cancelled.
    pub(super) fn start(
        self,
        bus: &Bus,
        agents: Vec<String>,
        group: Option<String>,
        stop: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if !self.on {
            return tasks;
        }
        #[cfg(feature = "prometheus")]
        if let Some(l) = self.listener {
            tasks.push(tokio::spawn(l.serve(bus.clone(), stop.clone())));
        }
        if !agents.is_empty() {
            tasks.push(tokio::spawn(crate::metrics::sample_queues(
                bus.clone(),
                Some(agents),
                group,
                SAMPLE_EVERY,
                stop.clone(),
            )));
        }
        tasks
    }
}

impl super::stream::StreamState {
    /// The `message_type` label of a message of this stream (`other` for a type it has no
    /// handler for).
    pub(super) fn type_label<'a>(&self, message_type: &'a str) -> &'a str {
        crate::metrics::type_label(self.spec.handlers.contains_key(message_type), message_type)
    }

    /// The `message_type` label of an entry not decoded yet (decoded only when recording).
    pub(super) fn type_label_of(&self, entry: &crate::broker::RawEntry) -> String {
        if !crate::metrics::enabled() {
            return String::new();
        }
        entry.decode().map_or_else(
            |_| "other".to_owned(),
            |m| self.type_label(&m.message_type).to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::from_pairs;

    #[test]
    fn the_address_is_parsed_or_refused_naming_the_variable_and_value() {
        let ok = addr_from(&from_pairs(&[(METRICS_ADDR_VAR, " 127.0.0.1:9464 ")])).unwrap();
        assert_eq!(ok, Some("127.0.0.1:9464".parse().unwrap()));
        let local = addr_from(&from_pairs(&[(METRICS_ADDR_VAR, "localhost:0")])).unwrap();
        assert_eq!(local, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(addr_from(&from_pairs(&[])).unwrap(), None);
        let e = addr_from(&from_pairs(&[(METRICS_ADDR_VAR, "9464")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FABRIC_METRICS_ADDR") && e.contains("\"9464\"") && e.contains("IP:PORT"),
            "{e}"
        );
        assert!(addr_from(&from_pairs(&[(METRICS_ADDR_VAR, "127.0.0.1:99999")])).is_err());
    }
}
