//! Wire compatibility with the user's Python bus (`fabric_message_bus.py`): an entry
//! written exactly as it writes one is handled, and the reply is one it can load.

use std::time::Duration;

use fabric_tests::{
    RedisServer, RunningWorker, entry_field, init_tracing, stream_entries, unique_agent,
    wait_until_async,
};
use fabric_worker::keys;
use redis::AsyncCommands;
use serde_json::{Value, json};

/// An entry written exactly as the Python bus writes it is handled, and the reply is one
/// the Python bus can load (`Message(**data)` with its dataclass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bus_wire_compatibility() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("py");
    let worker = RunningWorker::serve(&server.url(), &agent).await;

    // What fabric_message_bus.py's send_task puts on the wire (json.dumps default separators),
    // sent now (`datetime.utcnow().isoformat()`: a day-old one would have expired).
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f");
    let data = format!(
        r#"{{"id": "msg:4f1c2d3e-1111-4222-8333-944455566677", "from_agent": "pycoder", "to_agent": "{agent}", "message_type": "echo", "payload": {{"task_type": "code_review", "pr_id": "123"}}, "timestamp": "{now}", "priority": 3, "ttl_seconds": 86400, "reply_to": "agent:pycoder:results", "correlation_id": "0b9f4c1e-2222-4333-8444-955566677788"}}"#
    );
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "XADD",
            &keys::inbox(&agent),
            "MAXLEN",
            "10000",
            "*",
            "data",
            &data,
        ])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut conn = server.async_conn().await;
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            async move { c.xlen::<_, u64>("agent:pycoder:results").await.unwrap_or(0) >= 1 }
        })
        .await,
        "no reply in agent:pycoder:results"
    );
    let replies = stream_entries(&mut conn, "agent:pycoder:results").await;
    let reply_data = entry_field(&replies[0].1, "data").unwrap().to_owned();
    let reply: Value = serde_json::from_str(&reply_data).unwrap();
    assert_eq!(
        reply["correlation_id"],
        "0b9f4c1e-2222-4333-8444-955566677788"
    );
    assert_eq!(
        reply["payload"]["echo"],
        json!({"task_type": "code_review", "pr_id": "123"})
    );
    assert_eq!(reply["priority"], 3);

    // The Python bus's dataclass, loaded the way its from_dict does.
    let script = r#"
import json, sys
from dataclasses import dataclass
from typing import Any, Dict, Optional
from datetime import datetime

@dataclass
class Message:
    id: str
    from_agent: str
    to_agent: str
    message_type: str
    payload: Dict[str, Any]
    timestamp: str
    priority: int
    ttl_seconds: int
    reply_to: Optional[str]
    correlation_id: Optional[str]

    @classmethod
    def from_dict(cls, data):
        return cls(**data)

m = Message.from_dict(json.loads(sys.stdin.read()))
assert m.message_type == "response", m
assert isinstance(m.payload, dict)
assert isinstance(m.priority, int) and 1 <= m.priority <= 4
datetime.fromisoformat(m.timestamp)
print("loaded", m.id)
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test (apt-get install -y python3)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reply_data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python bus cannot load our reply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("loaded msg:"));
    worker.stop().await;
}
