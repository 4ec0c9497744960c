//! Test harness: real `redis-server` processes on free loopback ports, and worker
//! processes of the `test_worker` binary.
//!
//! A missing `redis-server` is a loud failure naming the install command, never a skip.
//! Set `FABRIC_TEST_REDIS_URL` to run the tests that only need *a* Redis against an
//! existing server instead (tests that restart or kill Redis always start their own).

pub mod handlers;
pub mod scrape;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by a test; killed (by its pid) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    appendonly: bool,
    external: Option<String>,
    /// Arguments every start of this server gets (e.g. `--aclfile`).
    args: Vec<String>,
    /// The user the harness connects as, when the default user is off.
    admin: Option<(String, String)>,
    /// Certificates of a TLS-only server (`--port 0 --tls-port <port>`).
    tls: Option<ServerTls>,
}

/// The TLS set-up of a [`RedisServer`]: its PKI and whether it requires client certificates.
#[derive(Debug, Clone)]
struct ServerTls {
    pki: PkiPaths,
    auth_clients: bool,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

fn redis_server_path() -> String {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "redis-server is not installed (or not on PATH); install it with `apt-get install -y redis-server` (Debian/Ubuntu) and run the tests again"
    );
    "redis-server".into()
}

impl RedisServer {
    /// A fresh server with nothing persisted, or the shared `FABRIC_TEST_REDIS_URL` if set.
    pub fn start() -> RedisServer {
        if let Ok(url) = std::env::var("FABRIC_TEST_REDIS_URL")
            && !url.is_empty()
        {
            return RedisServer {
                child: None,
                port: 0,
                dir: PathBuf::new(),
                appendonly: false,
                external: Some(url),
                args: Vec::new(),
                admin: None,
                tls: None,
            };
        }
        Self::start_own(false)
    }

    /// A fresh server of our own, always; with `appendonly yes, appendfsync always` if asked.
    pub fn start_own(appendonly: bool) -> RedisServer {
        Self::start_configured(appendonly, None)
    }

    /// A fresh server of our own loading `acl` as its ACL file (`--aclfile`); the harness
    /// connects as `admin` (user, password), which the file must define.
    pub fn start_with_acl(acl: &str, admin: (&str, &str), appendonly: bool) -> RedisServer {
        Self::start_configured(appendonly, Some((acl, admin)))
    }

    fn start_configured(appendonly: bool, acl: Option<(&str, (&str, &str))>) -> RedisServer {
        Self::start_with(appendonly, acl, None)
    }

    /// A fresh TLS-only server of our own (`--port 0 --tls-port <free port>`): its certificate
    /// is `pki`'s server certificate (for 127.0.0.1 and localhost); with `auth_clients` it
    /// requires a client certificate signed by `pki`'s CA (`--tls-auth-clients yes`).
    /// [`RedisServer::url`] is `rediss://127.0.0.1:<port>`; [`RedisServer::client`] connects
    /// with `pki`'s CA and client certificate.
    pub fn start_tls(pki: &TestPki, auth_clients: bool) -> RedisServer {
        Self::start_with(
            false,
            None,
            Some(ServerTls {
                pki: pki.paths.clone(),
                auth_clients,
            }),
        )
    }

    fn start_with(
        appendonly: bool,
        acl: Option<(&str, (&str, &str))>,
        tls: Option<ServerTls>,
    ) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "fabric-test-redis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir for redis-server");
        let mut args = Vec::new();
        let mut admin = None;
        if let Some((file, (user, pw))) = acl {
            let path = dir.join("users.acl");
            std::fs::write(&path, file).expect("write the ACL file");
            args.push("--aclfile".to_owned());
            args.push(path.display().to_string());
            admin = Some((user.to_owned(), pw.to_owned()));
        }
        let mut s = RedisServer {
            child: None,
            port: 0,
            dir,
            appendonly,
            external: None,
            args,
            admin,
            tls,
        };
        for _ in 0..20 {
            s.port = free_port();
            if s.spawn() {
                return s;
            }
        }
        panic!("could not start redis-server on a free loopback port after 20 tries");
    }

    fn spawn(&mut self) -> bool {
        self.spawn_with(&[])
    }

    fn spawn_with(&mut self, extra: &[&str]) -> bool {
        let bin = redis_server_path();
        let mut cmd = Command::new(bin);
        let log = self.dir.join("redis.log");
        match &self.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
            }
            Some(t) => {
                // Readiness is read from the log: start it afresh.
                let _ = std::fs::remove_file(&log);
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&t.pki.server_cert)
                    .arg("--tls-key-file")
                    .arg(&t.pki.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.pki.ca)
                    .args([
                        "--tls-auth-clients",
                        if t.auth_clients { "yes" } else { "no" },
                    ]);
            }
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--protected-mode")
            .arg("yes")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.args);
        cmd.args(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // port taken, most likely
            }
            let up = match &self.tls {
                None => ping(self.port),
                // No plain port to PING: the server says when it listens.
                Some(_) => std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Ready to accept connections")),
            };
            if up {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `redis://127.0.0.1:<port>` (with the admin's credentials on a server with an ACL file);
    /// `rediss://127.0.0.1:<port>` for a TLS server.
    pub fn url(&self) -> String {
        match (&self.external, &self.admin) {
            (Some(u), _) => u.clone(),
            (None, Some((user, pw))) => self.url_as(user, pw),
            (None, None) if self.tls.is_some() => format!("rediss://127.0.0.1:{}", self.port),
            (None, None) => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The URL to connect as `user` with password `pw`.
    pub fn url_as(&self, user: &str, pw: &str) -> String {
        format!("redis://{user}:{pw}@127.0.0.1:{}", self.port)
    }

    /// Its data directory (logs, append-only file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL by pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts the server again on the same port, with the same data directory
    /// (so an append-only file is replayed).
    pub fn restart(&mut self) {
        assert!(self.external.is_none(), "cannot restart an external Redis");
        self.stop();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Starts a stopped server again (same port and data directory).
    pub fn start_again(&mut self) {
        self.restart();
    }

    /// An async (multiplexed) client connection.
    pub async fn async_conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis_client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    /// A blocking client connection.
    pub fn client(&self) -> redis::Connection {
        self.redis_client()
            .get_connection()
            .expect("connect to test redis")
    }

    /// A redis-rs client for [`RedisServer::url`] (with the test CA and client certificate
    /// on a TLS server).
    fn redis_client(&self) -> redis::Client {
        match &self.tls {
            None => redis::Client::open(self.url()).expect("redis url"),
            Some(t) => redis::Client::build_with_tls(self.url(), t.pki.certificates())
                .expect("TLS client for the test redis"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // "+PONG", or "-NOAUTH …" from a server whose default user is off: up either way.
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
}

/// Test certificates made with rcgen, as PEM files in a directory of their own (removed
/// on drop): a CA, a server certificate for `127.0.0.1` and `localhost` signed by it, and a
/// client certificate signed by it. Two `TestPki`s have unrelated CAs.
#[derive(Debug)]
pub struct TestPki {
    paths: PkiPaths,
    dir: PathBuf,
}

/// Where a [`TestPki`]'s files are.
#[derive(Debug, Clone)]
struct PkiPaths {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl PkiPaths {
    /// The CA and client certificate, as redis-rs takes them.
    fn certificates(&self) -> redis::TlsCertificates {
        let read = |p: &Path| std::fs::read(p).expect("read a test certificate");
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&self.client_cert),
                client_key: read(&self.client_key),
            }),
            root_cert: Some(read(&self.ca)),
        }
    }
}

impl TestPki {
    /// A new CA with a server and a client certificate (ECDSA P-256).
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir =
            std::env::temp_dir().join(format!("fabric-test-pki-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a temp dir for test certificates");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a test certificate");
            path
        };

        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another TestPki's CA is a different issuer altogether.
        let ca_name = format!(
            "fabric test CA {}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(names).expect("certificate params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![usage];
            p.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &issuer).expect("sign a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "fabric test redis-server",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            Vec::new(),
            "fabric test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let paths = PkiPaths {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.crt", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.crt", client_cert),
            client_key: write("client.key", client_key),
        };
        TestPki { paths, dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> &Path {
        &self.paths.ca
    }

    /// The client certificate (PEM), signed by the CA.
    pub fn client_cert(&self) -> &Path {
        &self.paths.client_cert
    }

    /// The client certificate's private key (PEM, PKCS#8).
    pub fn client_key(&self) -> &Path {
        &self.paths.client_key
    }

    /// The directory holding the files (for extra files a test writes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ms since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Creates (or resets) the Redis user `agent` with the rules `fabric_worker::acl` gives an
/// agent in `mode`, and password `password`, through an admin connection.
pub async fn set_agent_user(
    admin: &mut redis::aio::MultiplexedConnection,
    agent: &str,
    mode: fabric_worker::bus::Mode,
    password: &str,
) {
    let rules = fabric_worker::acl::rules(
        &fabric_worker::acl::Role::Agent(agent.to_owned()),
        mode,
        password,
        &[],
    )
    .expect("the agent's ACL rules");
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(agent).arg(rules);
    let _: () = cmd.query_async(admin).await.expect("ACL SETUSER");
}

/// Clients blocked in a read (workers waiting on their streams). Redis 7.0 creates a
/// consumer only when it is first delivered something, so XINFO CONSUMERS can't show idle
/// workers.
pub fn blocked_clients(conn: &mut redis::Connection) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(conn)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits up to 10 s for `agent`'s workers to be up: they create the inbox's priority lanes
/// before their first read. Returns whether they did.
pub fn lanes_created(conn: &mut redis::Connection, agent: &str) -> bool {
    use redis::Commands;
    let lanes = fabric_worker::keys::lanes(&fabric_worker::keys::inbox(agent));
    wait_until(Duration::from_secs(10), || {
        lanes
            .iter()
            .all(|l| conn.exists::<_, bool>(l).unwrap_or(false))
    })
}

/// A multiplexed connection to `url` (as whichever user the URL names).
pub async fn conn_as(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to test redis")
}

/// Asserts that Redis refuses each command on `conn` with NOPERM (an ACL refusal).
pub async fn assert_noperm(conn: &mut redis::aio::MultiplexedConnection, cmds: &[redis::Cmd]) {
    for cmd in cmds {
        let e = cmd
            .query_async::<redis::Value>(conn)
            .await
            .expect_err("the ACL refuses it");
        assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    }
}

/// A unique name for an agent in one test (keeps tests sharing a Redis apart).
pub fn unique_agent(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Path of the `test_worker` binary built with this package.
/// (Integration tests live in `target/<profile>/deps/`; the binary one level up.)
pub fn test_worker_bin() -> PathBuf {
    test_bin("test_worker")
}

/// The path of one of this package's binaries (`test_worker`, `test_router`).
pub fn test_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing; build it with `cargo build -p fabric-tests --bins` (cargo test builds it automatically)",
        bin.display()
    );
    bin
}

/// A multi-threaded runtime (2 threads) for synchronous tests that talk to Redis through
/// the async API.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// A `test_worker` process; killed (SIGKILL, by pid) when dropped if still running.
#[derive(Debug)]
pub struct WorkerProcess {
    /// The child.
    pub child: Child,
}

impl WorkerProcess {
    /// Starts `test_worker` for `agent` against `url` with extra environment variables.
    pub fn start(url: &str, agent: &str, env: &[(&str, String)]) -> WorkerProcess {
        let mut cmd = Command::new(test_worker_bin());
        cmd.env("REDIS_URL", url)
            .env("FABRIC_AGENTS", agent)
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        WorkerProcess {
            child: cmd.spawn().expect("spawn test_worker"),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by pid.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async version of [`wait_until`].
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The workspace root (for scripts and fixtures).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// Logs of in-process workers go to the test's output (`RUST_LOG` filters).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Logs of a test helper process (a worker or router binary) to stderr, at `RUST_LOG`
/// (default `warn`).
pub fn init_process_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A worker running in this process (a tokio task) until [`RunningWorker::stop`].
#[derive(Debug)]
pub struct RunningWorker {
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<fabric_worker::Result<()>>,
}

impl RunningWorker {
    /// Builds the worker and runs it in the background.
    ///
    /// With `FABRIC_TEST_SHARED_READS` set (to anything), the worker reads on its shared
    /// connection woken by notifications, as a process serving many agents does, whatever the
    /// number of agents: `FABRIC_TEST_SHARED_READS=1 cargo test -p fabric-tests` runs the
    /// suites that way.
    pub async fn start(builder: fabric_worker::runtime::WorkerBuilder) -> RunningWorker {
        let builder = if std::env::var_os("FABRIC_TEST_SHARED_READS").is_some() {
            builder.blocking_readers(0)
        } else {
            builder
        };
        let worker = builder.build().await.expect("build the worker");
        let token = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(worker.run_until(token.clone().cancelled_owned()));
        RunningWorker { token, handle }
    }

    /// An in-process worker for `agent` tuned for tests: short read block, retries after
    /// 100 ms (at most 5 s), due retries checked every 50 ms; `tune` adjusts the rest.
    pub async fn fast(
        url: &str,
        agent: &str,
        tune: impl FnOnce(
            fabric_worker::runtime::WorkerBuilder,
        ) -> fabric_worker::runtime::WorkerBuilder,
    ) -> RunningWorker {
        let builder = fabric_worker::Worker::builder(agent)
            .url(url)
            .block(Duration::from_millis(500))
            .backoff(Duration::from_millis(100), Duration::from_secs(5))
            .retry_poll_interval(Duration::from_millis(50));
        RunningWorker::start(tune(builder)).await
    }

    /// An in-process worker for `agent` with a short read block (quick to stop).
    pub async fn serve(url: &str, agent: &str) -> RunningWorker {
        RunningWorker::start(
            fabric_worker::Worker::builder(agent)
                .url(url)
                .block(Duration::from_millis(500)),
        )
        .await
    }

    /// Shuts it down gracefully and checks it stopped cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle
            .await
            .expect("worker task panicked")
            .expect("worker returned an error");
    }
}

/// The JSON records `test_worker` appended to `<list>:<agent>` (`test:started`, `test:done`).
pub fn records(conn: &mut redis::Connection, list: &str, agent: &str) -> Vec<serde_json::Value> {
    use redis::Commands;
    let lines: Vec<String> = conn
        .lrange(format!("{list}:{agent}"), 0, -1)
        .unwrap_or_default();
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("test_worker writes JSON records"))
        .collect()
}

/// A Redis Cluster of `n` master `redis-server` processes on free loopback ports, created
/// with `redis-cli --cluster create`; every process is killed (by pid) when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes and forms the cluster (all 16,384 slots assigned, state ok).
    pub fn start(n: usize) -> RedisCluster {
        Self::start_with(n, 0, None)
    }

    /// A cluster of `masters` primaries with `replicas` replicas each, and a short
    /// `cluster-node-timeout` (1 s) so that a killed primary's replica is promoted within a
    /// few seconds. Returns once every replica is in sync.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        let cluster = Self::start_with(masters * (1 + replicas), replicas, None);
        let wanted = format!("connected_slaves:{replicas}");
        let ok = wait_until(Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut n.client())
                    .unwrap_or_default();
                // A primary with its replica online, or a replica whose link is up.
                info.contains(&wanted) && info.contains(",state=online,")
                    || info.contains("master_link_status:up")
            })
        });
        assert!(ok, "the replicas did not sync with their primaries");
        cluster
    }

    /// A cluster of TLS-only nodes (`--tls-cluster yes`: clients and the cluster bus use TLS),
    /// with `pki`'s server certificate; [`RedisCluster::url`] lists `rediss://` seeds.
    pub fn start_tls(n: usize, pki: &TestPki) -> RedisCluster {
        let tls = ServerTls {
            pki: pki.paths.clone(),
            auth_clients: false,
        };
        Self::start_with(n, 0, Some(&tls))
    }

    fn start_with(n: usize, replicas: usize, tls: Option<&ServerTls>) -> RedisCluster {
        // Failover tests want a replica promoted quickly; the others no failover at all.
        let node_timeout = if replicas > 0 { "1000" } else { "5000" };
        redis_server_path();
        let mut nodes = Vec::new();
        while nodes.len() < n {
            let dir = std::env::temp_dir().join(format!(
                "fabric-test-cluster-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).expect("create a temp dir for a cluster node");
            let mut node = RedisServer {
                child: None,
                port: 0,
                dir,
                appendonly: false,
                external: None,
                args: Vec::new(),
                admin: None,
                tls: tls.cloned(),
            };
            // The cluster bus listens on port + 10000: both must be free.
            let mut started = false;
            for _ in 0..50 {
                let p = free_port();
                if p > 55_000 || TcpListener::bind(("127.0.0.1", p + 10_000)).is_err() {
                    continue;
                }
                node.port = p;
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    node_timeout,
                ];
                let client_files;
                if let Some(t) = tls {
                    // Nodes connect to each other as clients: with the client certificate
                    // (the server's is for server authentication only).
                    client_files = [
                        t.pki.client_cert.display().to_string(),
                        t.pki.client_key.display().to_string(),
                    ];
                    args.extend(["--tls-cluster", "yes", "--tls-client-cert-file"]);
                    args.push(&client_files[0]);
                    args.push("--tls-client-key-file");
                    args.push(&client_files[1]);
                }
                // Kept, so that a restart (`start_again`) rejoins the cluster.
                node.args = args.iter().map(|a| (*a).to_owned()).collect();
                if node.spawn() {
                    started = true;
                    break;
                }
            }
            assert!(
                started,
                "could not start a cluster node on a free loopback port"
            );
            nodes.push(node);
        }
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        if let Some(t) = tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(&t.pki.ca)
                .arg("--cert")
                .arg(&t.pki.client_cert)
                .arg("--key")
                .arg(&t.pki.client_key);
        }
        let out = cmd
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is needed to create the cluster (apt-get install -y redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        let ok = wait_until(Duration::from_secs(20), || {
            cluster.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.client())
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            })
        });
        assert!(ok, "the cluster did not reach cluster_state:ok");
        cluster
    }

    /// The seed URLs, comma-separated (what `Bus::connect` and `REDIS_URL` take for a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to stop one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The index in [`RedisCluster::nodes`] of the node serving `key`'s slot as primary now.
    pub fn primary_of(&self, key: &str) -> Option<usize> {
        let live = self.nodes.iter().find(|n| n.child.is_some())?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut live.client())
            .ok()?;
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut live.client())
            .ok()?;
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let (
                Some(redis::Value::Int(lo)),
                Some(redis::Value::Int(hi)),
                Some(redis::Value::Array(primary)),
            ) = (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&i64::from(slot)) {
                let Some(redis::Value::Int(port)) = primary.get(1) else {
                    return None;
                };
                return self.nodes.iter().position(|n| i64::from(n.port) == *port);
            }
        }
        None
    }
}

/// The entries of stream `key`, oldest first: id and fields (sorted by name).
pub async fn stream_entries(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    use redis::AsyncCommands;
    let v: redis::streams::StreamRangeReply = conn.xrange_all(key).await.expect("XRANGE");
    v.ids
        .into_iter()
        .map(|e| {
            let mut f: Vec<(String, String)> = e
                .map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value_ref::<String>(v).unwrap_or_default(),
                    )
                })
                .collect();
            f.sort();
            (e.id, f)
        })
        .collect()
}

/// One field of an entry returned by [`stream_entries`].
pub fn entry_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The password every user of a [`SecureRedis`] has: `<user>-pw`.
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// A redis-server running the ACL file `fabric_worker::acl` generates for secure mode: one
/// user per agent, the router, the MCP server, the monitor and the admin (the harness's own
/// connections), each with password `<user>-pw`, and the default user off.
#[derive(Debug)]
pub struct SecureRedis {
    /// The server (its `url()` connects as the admin).
    pub server: RedisServer,
    /// The agents with a user.
    pub agents: Vec<String>,
}

impl SecureRedis {
    /// Starts the server with the generated ACL file.
    pub fn start(agents: &[String], appendonly: bool) -> SecureRedis {
        use fabric_worker::acl::{self, Role};
        use fabric_worker::bus::Mode;
        let mut users: Vec<(String, Vec<String>)> =
            vec![("default".to_owned(), acl::default_user_rules())];
        for a in agents {
            users.push((
                a.clone(),
                acl::rules(&Role::Agent(a.clone()), Mode::Secure, &password(a), &[]).unwrap(),
            ));
        }
        for (name, role) in [
            (acl::ROUTER_USER, Role::Router),
            (acl::MCP_USER, Role::McpServer),
            (acl::MONITOR_USER, Role::Monitor),
            (acl::ADMIN_USER, Role::Admin),
        ] {
            users.push((
                name.to_owned(),
                acl::rules(&role, Mode::Secure, &password(name), &[]).unwrap(),
            ));
        }
        let file = acl::file(&users);
        let admin_pw = password(acl::ADMIN_USER);
        let server = RedisServer::start_with_acl(&file, (acl::ADMIN_USER, &admin_pw), appendonly);
        SecureRedis {
            server,
            agents: agents.to_vec(),
        }
    }

    /// The URL to connect as `user`.
    pub fn url_of(&self, user: &str) -> String {
        self.server.url_as(user, &password(user))
    }

    /// The router's URL.
    pub fn router_url(&self) -> String {
        self.url_of(fabric_worker::acl::ROUTER_USER)
    }

    /// As the admin: loads the function library and registers every agent.
    pub async fn prepare(&self) {
        let admin = fabric_worker::Bus::connect(self.server.url())
            .await
            .expect("connect as the admin");
        admin.setup().await.expect("load the function library");
        for a in &self.agents {
            admin
                .register_agent(a, None)
                .await
                .expect("register an agent");
        }
    }

    /// A secure-mode bus with `agent`'s credentials.
    pub async fn agent_bus(&self, agent: &str) -> fabric_worker::Bus {
        fabric_worker::Bus::builder(self.url_of(agent))
            .mode(fabric_worker::bus::Mode::Secure)
            .connect()
            .await
            .expect("connect as the agent")
    }
}

/// A router running in this process (a tokio task) until [`RunningRouter::stop`].
#[derive(Debug)]
pub struct RunningRouter {
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<fabric_worker::Result<()>>,
}

impl RunningRouter {
    /// Builds the router and runs it in the background.
    pub async fn start(builder: fabric_worker::router::RouterBuilder) -> RunningRouter {
        let router = builder.build().await.expect("build the router");
        let token = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(router.run_until(token.clone().cancelled_owned()));
        RunningRouter { token, handle }
    }

    /// A router for `url` that finds outboxes every 50 ms and takes over after 500 ms.
    pub async fn serve(url: &str) -> RunningRouter {
        RunningRouter::start(
            fabric_worker::router::Router::builder()
                .url(url)
                .scan_interval(Duration::from_millis(50))
                .reclaim_idle(Duration::from_millis(500)),
        )
        .await
    }

    /// Stops it and checks it stopped cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle
            .await
            .expect("router task panicked")
            .expect("router returned an error");
    }
}

/// A `test_router` process; killed (SIGKILL, by pid) when dropped if still running.
#[derive(Debug)]
pub struct RouterProcess {
    /// The child.
    pub child: Child,
}

impl RouterProcess {
    /// Starts `test_router` against `url` (the router's credentials).
    pub fn start(url: &str) -> RouterProcess {
        let child = Command::new(test_bin("test_router"))
            .env("REDIS_URL", url)
            .env(
                "RUST_LOG",
                std::env::var("TEST_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test_router");
        RouterProcess { child }
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls so far per command (`INFO commandstats`; commands run by functions included).
pub async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}
