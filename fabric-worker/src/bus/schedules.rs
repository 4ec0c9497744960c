//! [`Bus::schedules`]: the periodic schedules of an agent, with their last and next runs.

use std::collections::HashMap;

use super::Bus;
use crate::error::{Error, Result};
use crate::keys;
use crate::schedule::{Schedule, ScheduleInfo, ScheduleRun, ScheduleSpec};

impl Bus {
    /// The periodic schedules the workers of `agent` registered (`agent:<agent>:schedules`),
    /// with their last run (`agent:<agent>:schedule_runs`) and the next boundary after now,
    /// by name. A schedule no longer declared stays listed until its fields are deleted
    /// (`HDEL agent:<agent>:schedules <name>`, and the same in `…:schedule_runs`).
    pub async fn schedules(&self, agent: &str) -> Result<Vec<ScheduleInfo>> {
        keys::validate_agent(agent)?;
        let specs_key = keys::schedules(agent);
        let runs_key = keys::schedule_runs(agent);
        let mut conn = self.broker().conn();
        let specs: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&specs_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("HGETALL", &specs_key, e))?;
        let runs: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&runs_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("HGETALL", &runs_key, e))?;
        let now = crate::time::now_ms();
        let mut out = Vec::new();
        for (name, raw) in specs {
            let spec: ScheduleSpec = match serde_json::from_str(&raw) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%agent, schedule = %name, error = %e, "unreadable schedule record; skipped");
                    continue;
                }
            };
            let run: ScheduleRun = runs
                .get(&name)
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            let next_run_ms = Schedule::from_record(&spec).and_then(|s| s.next_after_ms(now));
            out.push(ScheduleInfo {
                spec,
                run,
                next_run_ms,
            });
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(out)
    }
}
