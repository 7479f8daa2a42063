//! The `/api/v1` HTTP API of the daemon run as a process: the token rules, the envelopes, the
//! recordings routes against a real throwaway PostgreSQL, and what happens when it goes away.
//! The graph database is a closed port throughout: the catalog's writes never wait for it.

mod support;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/body_limit.rs"]
mod body_limit;
#[path = "api/client.rs"]
mod client;
#[path = "api/invalid.rs"]
mod invalid;
#[path = "api/outage.rs"]
mod outage;
#[path = "api/recordings.rs"]
mod recordings;
