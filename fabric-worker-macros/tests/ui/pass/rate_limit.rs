use fabric_worker::prelude::*;

#[handler(message_type = "complete", rate_limit = "openai:60/m")]
async fn shared() {}

#[handler(message_type = "local", rate_limit = "10/s")]
async fn per_handler() {}

#[handler(message_type = "bursty", rate_limit = "llm.v2-eu_1:100/10s, burst=5")]
async fn with_burst() {}

#[handler(message_type = "free")]
async fn unlimited() {}

fn main() {
    use fabric_worker::__private::{RateLimitDecl, Registration, inventory};

    let find = |ty: &str| {
        inventory::iter::<Registration>
            .into_iter()
            .find(|r| r.message_type == ty)
            .unwrap_or_else(|| panic!("no registration for {ty}"))
    };
    let decl = |name, count, period_ms, burst| RateLimitDecl { name, count, period_ms, burst };
    assert_eq!(find("complete").rate_limit, Some(decl(Some("openai"), 60, 60_000, 1)));
    assert_eq!(find("local").rate_limit, Some(decl(None, 10, 1_000, 1)));
    assert_eq!(
        find("bursty").rate_limit,
        Some(decl(Some("llm.v2-eu_1"), 100, 10_000, 5))
    );
    assert_eq!(find("free").rate_limit, None);
}
