//! What is wrong with a Redis URL, in words (for the usage error of a bad `--redis-url`).

/// Schemes redis-rs accepts.
const SCHEMES: [&str; 6] = ["redis", "rediss", "unix", "redis+unix", "valkey", "valkeys"];

/// `url` with the password of its user info replaced by `***`.
pub(crate) fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let user = info.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// What is wrong with one Redis URL, when it is one of the usual mistakes; `None` when
/// nothing obvious is.
pub(crate) fn problem(url: &str) -> Option<String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(
            "it has no scheme: write redis://HOST:PORT (rediss:// for TLS, unix:///path for a socket)"
                .to_owned(),
        );
    };
    if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Some(format!(
            "unknown scheme \"{scheme}\": use redis://, rediss:// (TLS) or unix:///path"
        ));
    }
    if scheme.contains("unix") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Some("an IPv6 address must be closed with ]".to_owned()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Some("it names no host: write redis://HOST:PORT".to_owned());
    }
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|n| n > 0)
    {
        return Some(format!("\"{p}\" is not a port number (1 to 65535)"));
    }
    if let Some(db) = tail.strip_prefix('/') {
        let db = db.split(['?', '#']).next().unwrap_or("");
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Some(format!(
                "the database \"{db}\" after the host is not a number (e.g. redis://HOST:PORT/0)"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_mistake() {
        assert!(problem("127.0.0.1:6379").unwrap().contains("no scheme"));
        assert!(
            problem("nope://x")
                .unwrap()
                .contains("unknown scheme \"nope\"")
        );
        assert!(
            problem("redis://h:99999")
                .unwrap()
                .contains("\"99999\" is not a port")
        );
        assert!(problem("redis://h:0").unwrap().contains("not a port"));
        assert!(problem("redis://u:p@:6379").unwrap().contains("no host"));
        assert!(problem("redis://h:6379/abc").unwrap().contains("\"abc\""));
        assert_eq!(problem("redis://u:p@h:6379/2"), None);
        assert_eq!(problem("rediss://[::1]:6380"), None);
        assert_eq!(problem("unix:///tmp/redis.sock"), None);
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(mask("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask("redis://:secret@h"), "redis://:***@h");
        assert_eq!(mask("redis://h:1"), "redis://h:1");
    }
}
