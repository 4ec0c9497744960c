use super::*;

fn ms(rfc3339: &str) -> u64 {
    to_ms(
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc),
    )
    .unwrap()
}

fn show(ms: Option<u64>) -> String {
    ms.and_then(to_utc).map_or("none".into(), |d| {
        d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

fn cron(expr: &str, tz: &str) -> Timing {
    Timing::Cron {
        schedule: Box::new(parse_cron(expr).unwrap()),
        tz: parse_tz(tz).unwrap(),
    }
}

/// The `n` boundaries after `from`, each found from the previous one.
fn fires(t: &Timing, from: &str, n: usize) -> Vec<String> {
    let mut at = ms(from);
    let mut out = Vec::new();
    for _ in 0..n {
        let next = t.next_after(at);
        out.push(show(next));
        match next {
            Some(x) => at = x,
            None => break,
        }
    }
    out
}

#[test]
fn intervals_are_aligned_to_the_epoch() {
    let t = Timing::Every { period_ms: 60_000 };
    assert_eq!(t.next_after(0), Some(60_000));
    assert_eq!(t.next_after(59_999), Some(60_000));
    assert_eq!(t.next_after(60_000), Some(120_000), "strictly after");
    assert_eq!(t.latest_at_or_before(60_000), Some(60_000));
    assert_eq!(t.latest_at_or_before(119_999), Some(60_000));
    assert_eq!(t.gap_after(60_000), 60_000);
    // Every process computes the same boundaries, whenever it started.
    let h = Timing::Every {
        period_ms: 3_600_000,
    };
    assert_eq!(
        show(h.next_after(ms("2026-11-28T15:26:33.123Z"))),
        "2026-11-28T16:00:00Z"
    );
}

#[test]
fn paris_spring_forward_fires_a_skipped_time_once_after_the_gap() {
    // 2026-03-29, the last Sunday of March: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let t = cron("0 30 2 * * *", "Europe/Paris");
    assert_eq!(
        fires(&t, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:30:00Z", // 02:30 does not exist: 03:30 CEST, with the offset before the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
    // Right after the jump (03:00 CEST), today's 02:30 is still to come (at 03:30).
    assert_eq!(
        show(t.next_after(ms("2026-03-29T01:00:00Z"))),
        "2026-03-29T01:30:00Z"
    );
    assert_eq!(
        show(t.latest_at_or_before(ms("2026-03-29T01:20:00Z"))),
        "2026-03-28T01:30:00Z"
    );
    assert_eq!(
        show(t.latest_at_or_before(ms("2026-03-29T01:30:00Z"))),
        "2026-03-29T01:30:00Z"
    );
    let t = cron("0 0 3 * * *", "Europe/Paris");
    assert_eq!(
        fires(&t, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T02:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T01:00:00Z"
        ]
    );
}

#[test]
fn paris_spring_forward_every_half_hour_has_no_duplicate() {
    let t = cron("0 */30 * * * *", "Europe/Paris");
    assert_eq!(
        fires(&t, "2026-03-29T00:20:00Z", 4),
        [
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 02:00 (gap) = 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST (02:30 maps there too: one fire)
            "2026-03-29T02:00:00Z",
        ]
    );
}

#[test]
fn paris_fall_back_fires_a_repeated_time_once() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
    let t = cron("0 30 2 * * *", "Europe/Paris");
    assert_eq!(
        fires(&t, "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z", // the first 02:30 (CEST)
            "2026-10-26T01:30:00Z", // not the second one (01:30 UTC on the 25th)
        ]
    );
    // A process starting during the second 02:xx does not fire it again.
    assert_eq!(
        show(t.next_after(ms("2026-10-25T01:10:00Z"))),
        "2026-10-26T01:30:00Z"
    );
    assert_eq!(
        show(t.latest_at_or_before(ms("2026-10-25T01:40:00Z"))),
        "2026-10-25T00:30:00Z"
    );
}

#[test]
fn seconds_and_the_default_utc() {
    let t = cron("*/2 * * * * *", "UTC");
    assert_eq!(
        show(t.next_after(ms("2026-11-28T15:00:00.500Z"))),
        "2026-11-28T15:00:02Z"
    );
    assert_eq!(
        show(t.next_after(ms("2026-11-28T15:00:02Z"))),
        "2026-11-28T15:00:04Z"
    );
    assert_eq!(
        show(t.latest_at_or_before(ms("2026-11-28T15:00:03.999Z"))),
        "2026-11-28T15:00:02Z"
    );
    assert_eq!(t.gap_after(ms("2026-11-28T15:00:02Z")), 2_000);
    // New York, in winter: UTC-5.
    let t = cron("0 0 9 * * MON-FRI", "America/New_York");
    assert_eq!(
        show(t.next_after(ms("2026-11-28T15:00:00Z"))), // a Saturday
        "2026-11-30T14:00:00Z"
    );
}

#[test]
fn a_date_that_never_comes_ends_the_schedule() {
    let t = cron("0 0 0 30 2 *", "UTC");
    assert_eq!(t.next_after(ms("2026-01-01T00:00:00Z")), None);
}

#[test]
fn parse_errors_say_what_is_expected() {
    let e = parse_cron("0 3 * * *").unwrap_err();
    assert!(
        e.contains("5 fields") && e.contains("\"0 0 3 * * *\""),
        "{e}"
    );
    let e = parse_cron("61 * * * * *").unwrap_err();
    assert!(
        e.starts_with("invalid cron expression \"61 * * * * *\""),
        "{e}"
    );
    assert!(parse_cron("@daily").is_ok());
    assert!(parse_cron("0 0 3 * * * 2030").is_ok());
    let e = parse_tz("Mars/Olympus").unwrap_err();
    assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
}
