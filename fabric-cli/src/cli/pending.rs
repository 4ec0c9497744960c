//! `fabric pending AGENT`.

use fabric_worker::bus::PendingEntry;

use super::{PendingArgs, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms, opt_duration_ms};

pub(crate) fn render(entries: &[PendingEntry]) -> String {
    let mut t = Table::new(
        &["STREAM ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"],
        &["IDLE", "DELIVERIES", "AGE"],
    );
    for e in entries {
        t.row(vec![
            e.stream_id.clone(),
            e.consumer.clone(),
            duration_ms(e.idle_ms),
            e.deliveries.to_string(),
            opt_duration_ms(e.age_ms),
        ]);
    }
    t.render()
}

pub(crate) async fn run(at: &Target, json: bool, args: PendingArgs) -> Result<()> {
    validate_agent(&args.agent)?;
    if args.count == 0 || args.count > 10_000 {
        return Err(Error::Usage("--count must be from 1 to 10000".into()));
    }
    let bus = at.connect().await?;
    super::status::require_inbox(&bus, &args.agent).await?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| fabric_worker::keys::default_group(&args.agent));
    let entries = bus.pending(&args.agent, Some(&group), args.count).await?;
    if json {
        return output::print_json(&entries);
    }
    if entries.is_empty() {
        return output::println(&format!(
            "nothing pending in {} for group {group}",
            fabric_worker::keys::inbox(&args.agent)
        ));
    }
    output::print(&render(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let text = render(&[PendingEntry {
            stream_id: "1700000000000-0".into(),
            consumer: "percy-w1".into(),
            idle_ms: 4200,
            deliveries: 2,
            age_ms: Some(61_000),
        }]);
        assert_eq!(
            text,
            "STREAM ID        CONSUMER  IDLE  DELIVERIES    AGE\n\
             1700000000000-0  percy-w1  4.2s           2  1m01s\n"
        );
    }
}
