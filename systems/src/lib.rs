//! Reference systems built on shardlock's public API. Each has a binary
//! (`src/bin/`) and an integration test that starts it and drives it as a
//! user would.
//!
//! * [`kv`]: a key-value datastore of people over HTTP (`kv-store`), and the
//!   load generator that compares it with a `RwLock<HashMap>` backend.
//! * [`telemetry`]: one owner talking to a car, publishing readings through a
//!   `Watch` to consumers (`car-telemetry`).
//! * [`registers`]: a register machine whose writers run instructions under
//!   `PathLock` sets, checked by replaying its log in fencing-id order
//!   (`registers`, and over HTTP `registers-server`).
//! * [`http_errors`]: the JSON errors both HTTP systems answer with.
pub mod http_errors;
pub mod kv;
pub mod registers;
pub mod shutdown;
pub mod telemetry;
