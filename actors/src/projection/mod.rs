//! The graph projection: the catalog's outbox (`graph_outbox`, written in the same PostgreSQL
//! transaction as every catalog write) applied to the graph, so that the graph catches up,
//! exactly, after any outage.
//!
//! # Files
//! - `settings.rs`: `[projection]`.
//! - `outbox.rs`: the SQL: claim, delete, release, reject, count, re-drive.
//! - `cypher.rs`: payloads as rows, the `UNWIND` statements, a batch in one graph transaction.
//! - `schema.rs`: the uniqueness constraints issued at startup.
//! - `rules.rs`: pure rules: which failures count, the backoff of a rejected event.
//! - `actor.rs`: [`ProjectorActor`], the loop; `listener.rs`: the `LISTEN` wake-up.
//! - `rebuild.rs`: `warden project --rebuild`.

mod actor;
pub mod cypher;
mod listener;
pub mod outbox;
pub mod rebuild;
pub mod rules;
pub mod schema;
mod settings;

pub(crate) use actor::Signals;
pub use actor::{ProjectorActor, StopProjector};
pub(crate) use listener::listen;
pub use outbox::{DeadEvent, Retry, Summary};
pub use settings::ProjectionSettings;
