//! The `fabric` command (library part).
