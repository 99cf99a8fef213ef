//! End-to-end tests: the real `oxcast` binary on free loopback ports with a temporary data
//! directory, driven over real HTTP (and raw TCP where a well-behaved client would not go).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    unreachable_pub
)]

// This file is a crate root, whose modules would otherwise be looked up beside it.
#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/api.rs"]
mod api;
#[path = "e2e/archive.rs"]
mod archive;
#[path = "e2e/archive_limits.rs"]
mod archive_limits;
#[path = "e2e/assets.rs"]
mod assets;
#[path = "e2e/browser.rs"]
mod browser;
#[path = "e2e/containers.rs"]
mod containers;
#[path = "e2e/dashboard.rs"]
mod dashboard;
#[path = "e2e/destination.rs"]
mod destination;
#[path = "e2e/durability.rs"]
mod durability;
#[path = "e2e/hls.rs"]
mod hls;
#[path = "e2e/http_limits.rs"]
mod http_limits;
#[path = "e2e/ingest.rs"]
mod ingest;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/notifications.rs"]
mod notifications;
#[path = "e2e/operations.rs"]
mod operations;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/rtmp_limits.rs"]
mod rtmp_limits;
#[path = "e2e/simulcast.rs"]
mod simulcast;
#[path = "e2e/startup.rs"]
mod startup;
