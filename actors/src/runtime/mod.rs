//! Settings that change while warden runs, from PostgreSQL's `config` table.
//!
//! - `snapshot.rs`: which keys may change ([`RUNTIME_KEYS`]), and how the table's rows become
//!   one validated [`RuntimeSettings`] (pure).
//! - `tunables.rs`: the values in force, read by the actors at each decision point
//!   ([`Tunables`]), and [`RuntimeSettingsHandle`], which applies a snapshot, logs each change
//!   and keeps the table's status for health and the settings API.
//! - `loader.rs`: `LISTEN`/`NOTIFY`, the poll, and the reload after each reconnect.

mod loader;
pub mod snapshot;
mod tunables;

pub(crate) use loader::run as run_loader;
pub use loader::TableSettings;
pub use snapshot::{
    check_key, classify, DatabaseTunables, KeyKind, RuntimeSettings, RuntimeSettingsError,
    RUNTIME_KEYS,
};
pub use tunables::{RuntimeSettingsHandle, TableStatus, Tunables};
