//! The Redis Functions library (`fabric-worker/lua/fabric.lua`): loading it, checking its
//! version, and calling its functions with `FCALL`.
//!
//! Agents in secure mode may `FCALL` but not load functions (or `EVAL` anything): the library
//! is loaded by an administrative step (`fabric setup`, [`Bus::setup`](crate::Bus::setup)).
//! A worker whose Redis user may load functions (direct mode, a trusted team) loads it by
//! itself when it is missing or older than the worker, and again after a Redis restart that
//! lost it.

use redis::FromRedisValue;

use super::Broker;
use crate::error::{Error, Result};

/// The library's source.
pub(crate) const LIBRARY: &str = include_str!("../../lua/fabric.lua");

/// The version this code needs (the library's `VERSION`).
pub(crate) const VERSION: i64 = 6;

/// An `FCALL` of one of the library's functions on `keys`.
pub(crate) fn fcall(function: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function).arg(keys.len()).arg(keys);
    cmd
}

/// `FCALL fabric_promote` for the stream `stream`: its retries and, when it is an inbox, its
/// schedule of delayed messages and its lanes (keys that do not exist cost nothing), up to
/// 100 members of each set per call.
pub(crate) fn promote(stream: &str) -> redis::Cmd {
    let retries = crate::keys::retries(stream);
    let dead = crate::keys::dead_letters(stream);
    let delayed = crate::keys::delayed(stream);
    let lanes = crate::keys::lanes(stream);
    let mut ks = vec![stream, retries.as_str(), dead.as_str(), delayed.as_str()];
    ks.extend(lanes.iter().map(String::as_str));
    let mut cmd = fcall("fabric_promote", &ks);
    cmd.arg(100);
    cmd
}

fn is_missing_function(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

impl Broker {
    /// The version of the loaded library; `None` when it is not loaded.
    pub(crate) async fn library_version(&self) -> Result<Option<i64>> {
        let r: redis::RedisResult<i64> = redis::cmd("FCALL_RO")
            .arg("fabric_version")
            .arg(0)
            .query_async(&mut self.conn())
            .await;
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_missing_function(&e) => Ok(None),
            Err(e) => Err(Error::redis("FCALL_RO fabric_version", "", e)),
        }
    }

    /// Loads (or replaces) the library (on every primary of a cluster).
    pub(crate) async fn load_library(&self) -> Result<()> {
        let _: redis::Value = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(LIBRARY)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("FUNCTION LOAD", "fabric", e))?;
        tracing::info!(version = VERSION, "loaded the fabric function library");
        Ok(())
    }

    /// Makes sure the library is loaded, at this version or a newer one: loads it if this
    /// Redis user may, else says who must.
    pub(crate) async fn ensure_library(&self) -> Result<()> {
        let found = self.library_version().await?;
        match found {
            Some(v) if v >= VERSION => {
                if v > VERSION {
                    tracing::warn!(
                        loaded = v,
                        this_worker = VERSION,
                        "the fabric function library is newer than this worker; functions keep their signatures across versions, so it is used as it is"
                    );
                }
                Ok(())
            }
            _ => match self.load_library().await {
                Ok(()) => Ok(()),
                Err(Error::PermissionDenied { .. }) => Err(Error::LibraryMissing {
                    found,
                    needed: VERSION,
                }),
                Err(e) => Err(e),
            },
        }
    }

    /// [`Broker::ensure_library`], once per broker while it succeeds (for pipelines of
    /// `FCALL`s, which cannot load the library half-way).
    pub(crate) async fn ensure_library_once(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.inner.library_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.ensure_library().await?;
        self.inner.library_ok.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets that the library was found (an `FCALL` said it is missing).
    pub(crate) fn library_lost(&self) {
        self.inner
            .library_ok
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs an `FCALL`; if the library is missing (a Redis restart without persistence
    /// lost it), loads it when allowed and runs the call once more.
    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        what: &'static str,
        key: &str,
    ) -> Result<T> {
        match cmd.query_async::<T>(&mut self.conn()).await {
            Ok(v) => Ok(v),
            Err(e) if is_missing_function(&e) => {
                self.ensure_library().await?;
                cmd.query_async(&mut self.conn())
                    .await
                    .map_err(|e| Error::redis(what, key, e))
            }
            Err(e) => Err(Error::redis(what, key, e)),
        }
    }
}
