//! Hooks on a bus: [`Bus::with_hook`], [`Bus::with_hook_options`], [`Bus::hook_stats`].

use std::sync::Arc;

use super::Bus;
use crate::hooks::{Hook, HookOptions, HookStats, Hooks};

impl Bus {
    /// This bus (sharing its connections) with `hook` told about every message it sends,
    /// and — when it is a worker's bus — every message the worker handles or dead-letters.
    /// Called with the default [`HookOptions`] (2 s per call, 10,000 events queued); see
    /// [`crate::hooks`] for why a failing or slow hook cannot lose or block messages.
    pub fn with_hook(&self, hook: impl Hook) -> Bus {
        self.with_hook_options(hook, HookOptions::default())
    }

    /// [`with_hook`](Bus::with_hook) with other options.
    pub fn with_hook_options(&self, hook: impl Hook, options: HookOptions) -> Bus {
        self.with_hook_arc(Arc::new(hook), options)
    }

    pub(crate) fn with_hook_arc(&self, hook: Arc<dyn Hook>, options: HookOptions) -> Bus {
        Bus {
            inner: self.inner.clone(),
            hooks: self.hooks.with(hook, options),
        }
    }

    /// The counters of this bus's hooks (calls delivered, failed, panicked, timed out,
    /// events dropped), in the order they were added.
    pub fn hook_stats(&self) -> Vec<HookStats> {
        self.hooks.stats()
    }

    /// This bus's hooks.
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }
}
