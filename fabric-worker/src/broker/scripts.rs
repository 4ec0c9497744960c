//! The Lua scripts (in `fabric-worker/lua/`). Each declares every key it touches in `KEYS`,
//! all in one cluster slot (see `docs/protocol.md`).

use std::sync::LazyLock;

/// Reclaims entries idle past the lease and reports their delivery counts.
pub(crate) static RECLAIM: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/reclaim.lua")));
/// Renews the lease of in-flight entries this consumer still owns.
pub(crate) static LEASE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/lease.lua")));
/// Parks a failed entry for a later attempt and acknowledges it, atomically.
pub(crate) static SCHEDULE_RETRY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/schedule_retry.lua")));
/// Moves due retries back into the stream.
pub(crate) static PROMOTE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/promote.lua")));
/// Trims entries every group has been delivered and acknowledged.
pub(crate) static TRIM: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/trim.lua")));
