//! TLS for `rediss://` URLs: which CA the server's certificate must chain to, and the
//! client certificate for mutual TLS, read from PEM files; and the errors a failed TLS
//! connection is reported with.
//!
//! redis-rs does the TLS itself (rustls through tokio-rustls). Without a CA file the server's
//! certificate is checked against the Mozilla root set compiled in (`webpki-roots`); with one,
//! against the certificates in that file only. Certificate checking cannot be turned off:
//! a URL ending in `#insecure` is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redis::{ClientTlsConfig, ConnectionAddr, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// A PEM file named by a setting, and which setting named it (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PemFile {
    pub(crate) path: PathBuf,
    /// The environment variable (`FABRIC_TLS_CA_FILE`) or the builder method
    /// (`BusBuilder::tls_ca_file`) the path came from.
    pub(crate) setting: &'static str,
    pub(crate) from_env: bool,
}

impl PemFile {
    pub(crate) fn from_method(path: &Path, method: &'static str) -> PemFile {
        PemFile {
            path: path.to_owned(),
            setting: method,
            from_env: false,
        }
    }

    pub(crate) fn from_env(path: String, var: &'static str) -> PemFile {
        PemFile {
            path: PathBuf::from(path),
            setting: var,
            from_env: true,
        }
    }

    /// `FABRIC_TLS_CA_FILE=/etc/ca.pem` or `BusBuilder::tls_ca_file("/etc/ca.pem")`.
    fn shown(&self) -> String {
        if self.from_env {
            format!("{}={}", self.setting, self.path.display())
        } else {
            format!("{}({:?})", self.setting, self.path)
        }
    }

    fn error(&self, problem: impl std::fmt::Display, what: &str) -> Error {
        Error::Config(format!(
            "{} {problem}; {} must name a readable PEM file holding {what}",
            self.shown(),
            self.setting
        ))
    }

    fn read(&self, what: &str) -> Result<Vec<u8>> {
        std::fs::read(&self.path)
            .map_err(|e| self.error(format_args!("cannot be read ({e})"), what))
    }
}

/// The TLS files in force for one bus: each explicit setting over the environment's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// The CA certificate(s) the server's certificate must chain to.
    pub(crate) ca: Option<PemFile>,
    /// Client certificate (chain) and its private key, for mutual TLS.
    pub(crate) client: Option<(PemFile, PemFile)>,
}

const CA_WHAT: &str = "the CA certificate(s) that signed the Redis server's certificate (-----BEGIN CERTIFICATE----- blocks)";
const CERT_WHAT: &str = "this client's certificate, optionally followed by its intermediate CA certificates (-----BEGIN CERTIFICATE----- blocks)";
const KEY_WHAT: &str = "the private key of the client certificate (a -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)";

impl TlsFiles {
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// The setting that asked for TLS, for the error about a URL that is not `rediss://`.
    fn first_setting(&self) -> Option<String> {
        self.ca
            .as_ref()
            .or(self.client.as_ref().map(|(c, _)| c))
            .map(PemFile::shown)
    }

    /// Reads and checks the files: every certificate parses, the key is one the TLS library
    /// can use and belongs to the certificate. `None` when no file is set.
    pub(crate) fn load(&self) -> Result<Option<TlsCertificates>> {
        if self.is_empty() {
            return Ok(None);
        }
        ensure_crypto_provider();
        let root_cert = match &self.ca {
            None => None,
            Some(f) => {
                let pem = f.read(CA_WHAT)?;
                let certs = certificates(f, &pem, CA_WHAT)?;
                let mut store = rustls::RootCertStore::empty();
                for cert in certs {
                    store.add(cert).map_err(|e| {
                        f.error(
                            format_args!("holds a certificate that cannot be a trust anchor ({e})"),
                            CA_WHAT,
                        )
                    })?;
                }
                Some(pem)
            }
        };
        let client_tls = match &self.client {
            None => None,
            Some((cert_file, key_file)) => {
                let cert = cert_file.read(CERT_WHAT)?;
                let chain = certificates(cert_file, &cert, CERT_WHAT)?;
                let key = key_file.read(KEY_WHAT)?;
                let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    key_file.error(format_args!("holds no usable private key ({e})"), KEY_WHAT)
                })?;
                check_key_pair(chain, key_der).map_err(|e| {
                    Error::Config(format!(
                        "the client certificate {} and the key {} cannot be used together ({e}); give the certificate and the private key it was issued for",
                        cert_file.shown(),
                        key_file.shown()
                    ))
                })?;
                Some(ClientTlsConfig {
                    client_cert: cert,
                    client_key: key,
                })
            }
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Checks that the URLs and the files agree: TLS files need `rediss://` URLs (no setting
    /// silently goes unused on a plain connection), every seed of a cluster uses the same
    /// scheme, and `#insecure` (no hostname check) is refused. Returns whether TLS is used.
    pub(crate) fn check_urls(&self, urls: &[String]) -> Result<bool> {
        let mut tls_urls = 0;
        for u in urls {
            if is_tls_url(u)? {
                tls_urls += 1;
            }
        }
        if tls_urls != 0 && tls_urls != urls.len() {
            return Err(Error::invalid(
                "Redis URL",
                &super::conn::mask_urls(urls),
                "mixes rediss:// and plain URLs; give every seed node of a cluster with the same scheme (rediss:// for TLS)",
            ));
        }
        if tls_urls == 0
            && let Some(setting) = self.first_setting()
        {
            return Err(Error::Config(format!(
                "{setting} is set, but the Redis URL {} does not use TLS; write it rediss://host:port (the server's TLS port), or unset the TLS settings to connect without TLS",
                super::conn::mask_urls(urls)
            )));
        }
        if tls_urls != 0 {
            ensure_crypto_provider();
        }
        Ok(tls_urls != 0)
    }
}

/// Whether `url` is a `rediss://` URL; refuses `#insecure` (no hostname check).
pub(crate) fn is_tls_url(url: &str) -> Result<bool> {
    let client = redis::Client::open(url).map_err(|e| {
        Error::invalid(
            "Redis URL",
            &super::conn::mask_url(url),
            format!("{e}; expected e.g. redis://127.0.0.1:6379 or rediss://host:6380"),
        )
    })?;
    match client.get_connection_info().addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(Error::invalid(
            "Redis URL",
            &super::conn::mask_url(url),
            "#insecure would skip checking that the server's certificate names its host, which is not supported; connect with a host name or IP address its certificate lists, and give its CA with FABRIC_TLS_CA_FILE if it is a private one",
        )),
        ConnectionAddr::TcpTls { .. } => Ok(true),
        _ => Ok(false),
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(f: &PemFile, pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| f.error(format_args!("is not valid PEM ({e})"), what))?;
    if certs.is_empty() {
        return Err(f.error("holds no certificate", what));
    }
    Ok(certs)
}

/// Whether the TLS library accepts this certificate chain and key as a client identity
/// (a key type it supports, matching the certificate's public key).
fn check_key_pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> std::result::Result<(), rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)?;
    Ok(())
}

/// Makes sure rustls has a process-wide crypto provider before redis-rs builds a TLS
/// configuration (it enables none itself, and rustls would panic without one when several
/// are compiled in). An application that installed its own keeps it.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one first: that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// What a failed TLS connection means and what to do, when `source` is a TLS failure.
pub(crate) fn failure_hint(source: &redis::RedisError) -> Option<&'static str> {
    if let Some(e) = rustls_error(source) {
        return Some(match e {
            rustls::Error::InvalidCertificate(c) => certificate_hint(c),
            _ => REFUSED_HINT,
        });
    }
    // The typed error did not come through (redis-rs may re-wrap it): rustls's own wording.
    let text = source.to_string();
    if text.contains("invalid peer certificate") {
        Some(CA_HINT)
    } else if text.contains("received fatal alert") || text.contains("peer sent no certificates") {
        Some(REFUSED_HINT)
    } else {
        None
    }
}

const CA_HINT: &str = "the server's certificate is not signed by a CA this client trusts; set FABRIC_TLS_CA_FILE (BusBuilder::tls_ca_file) to the PEM file of the CA that signed it";
const REFUSED_HINT: &str = "the server refused the TLS connection; if it requires client certificates (tls-auth-clients yes), set FABRIC_TLS_CERT_FILE and FABRIC_TLS_KEY_FILE (BusBuilder::tls_client_cert) to a certificate signed by a CA the server trusts, and its key";

fn certificate_hint(e: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host of the URL; connect with a host name or IP address its certificate lists"
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is expired or not yet valid; renew it (or check this machine's clock)"
        }
        _ => CA_HINT,
    }
}

/// The rustls error inside a redis error, if any (an I/O error wrapping it).
fn rustls_error(source: &redis::RedisError) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(source);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        let io = e.downcast_ref::<std::io::Error>().or_else(|| {
            e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
                .and_then(|a| a.downcast_ref::<std::io::Error>())
        });
        if let Some(inner) = io.and_then(std::io::Error::get_ref)
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_file(path: &str, var: &'static str) -> PemFile {
        PemFile::from_env(path.into(), var)
    }

    #[test]
    fn tls_files_need_rediss_urls_and_insecure_is_refused() {
        let none = TlsFiles::default();
        assert!(!none.check_urls(&["redis://127.0.0.1:6379".into()]).unwrap());
        assert!(
            none.check_urls(&["rediss://127.0.0.1:6380".into()])
                .unwrap()
        );
        let ca = TlsFiles {
            ca: Some(env_file("/etc/ca.pem", "FABRIC_TLS_CA_FILE")),
            client: None,
        };
        let e = ca
            .check_urls(&["redis://u:secret@127.0.0.1:6379".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("FABRIC_TLS_CA_FILE=/etc/ca.pem is set")
                && e.contains("redis://u:***@127.0.0.1:6379 does not use TLS")
                && e.contains("rediss://")
                && !e.contains("secret"),
            "{e}"
        );
        let e = none
            .check_urls(&["rediss://a:1".into(), "redis://b:2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("mixes rediss:// and plain URLs"), "{e}");
        let e = none
            .check_urls(&["rediss://127.0.0.1:6380/#insecure".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("#insecure") && e.contains("not supported"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_and_malformed_files_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("fabric-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let files = TlsFiles {
            ca: Some(PemFile::from_method(&missing, "BusBuilder::tls_ca_file")),
            client: None,
        };
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.contains("BusBuilder::tls_ca_file(")
                && e.contains("missing.pem")
                && e.contains("cannot be read"),
            "{e}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = TlsFiles {
            ca: Some(env_file(junk.to_str().unwrap(), "FABRIC_TLS_CA_FILE")),
            client: None,
        };
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.contains("FABRIC_TLS_CA_FILE=")
                && e.contains("holds no certificate")
                && e.contains("PEM file"),
            "{e}"
        );
        let bad_b64 = dir.join("bad.pem");
        std::fs::write(
            &bad_b64,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let files = TlsFiles {
            ca: Some(env_file(bad_b64.to_str().unwrap(), "FABRIC_TLS_CA_FILE")),
            client: None,
        };
        let e = files.load().unwrap_err().to_string();
        assert!(e.contains("FABRIC_TLS_CA_FILE="), "{e}");
        let files = TlsFiles {
            ca: None,
            client: Some((
                env_file(junk.to_str().unwrap(), "FABRIC_TLS_CERT_FILE"),
                env_file(junk.to_str().unwrap(), "FABRIC_TLS_KEY_FILE"),
            )),
        };
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.contains("FABRIC_TLS_CERT_FILE=") && e.contains("holds no certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failure_hints_say_what_to_do() {
        let io = |m: &str| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::General(m.into()),
            ))
        };
        let unknown = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let h = failure_hint(&unknown).unwrap();
        assert!(h.contains("FABRIC_TLS_CA_FILE"), "{h}");
        let alert = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        ));
        let h = failure_hint(&alert).unwrap();
        assert!(h.contains("FABRIC_TLS_CERT_FILE"), "{h}");
        assert!(
            failure_hint(&io("something else")).is_some(),
            "any rustls error is a TLS failure"
        );
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(failure_hint(&refused), None);
    }
}
