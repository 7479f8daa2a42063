//! The outbox, in SQL: claim (head of each recording's group only, `FOR UPDATE SKIP LOCKED`,
//! a lease), delete and release fenced by the lease token, reject with backoff, count, and
//! re-drive dead events.
//!
//! Claiming never reads forward from the last id seen: ids are taken at insert and become
//! visible at commit, so id 10 can appear after id 11 was applied. Each claim instead takes the
//! oldest event of every recording that has one, as long as it is pending, due, and not
//! leased; a leased or dead head keeps its recording's later events waiting, so events of one
//! recording apply one at a time, in order, whichever warden claims them. The claim commits at
//! once: no PostgreSQL transaction stays open while the graph is written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Database, PostgresHandle, Sql, WardenError};

/// An event's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Replace the recording's subgraph with the payload's snapshot.
    Upsert,
    /// Remove the recording and its children.
    Delete,
}

/// One claimed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The outbox row.
    pub id: i64,
    /// The recording (the ordering key).
    pub recording: String,
    /// The recording's version after the write (for a delete, one past its last).
    pub version: i64,
    /// What to do.
    pub op: Op,
    /// `recording_snapshot()` at `version` for an upsert, `{}` for a delete.
    pub payload: Value,
    /// Rejections so far.
    pub attempts: u32,
}

/// The outbox at a glance, for health and `GET /api/v1/graph-sync`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Events waiting (leased ones included).
    pub pending: u64,
    /// Dead events.
    pub dead: u64,
    /// When the oldest pending event was written.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// A dead event, as an operator needs to see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadEvent {
    /// Its id, for `warden outbox retry <id>`.
    pub id: i64,
    /// The recording it blocks.
    pub recording_id: String,
    /// The version it carries.
    pub version: i64,
    /// `upsert` or `delete`.
    pub op: Op,
    /// Rejections it got.
    pub attempts: u32,
    /// The graph's (or the projector's) last reason.
    pub last_error: Option<String>,
    /// When the write that made it committed.
    pub created_at: Option<DateTime<Utc>>,
}

const CLAIM: &str = "\
WITH heads AS (
    SELECT DISTINCT ON (recording_id) id FROM graph_outbox
    WHERE state IN ('pending', 'dead')
    ORDER BY recording_id, id),
claimable AS (
    SELECT o.id FROM graph_outbox o JOIN heads h USING (id)
    WHERE o.state = 'pending' AND o.run_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until < now())
    ORDER BY o.id LIMIT $1
    FOR UPDATE OF o SKIP LOCKED)
UPDATE graph_outbox o
SET locked_until = now() + make_interval(secs => $2), lease_token = $3::uuid
FROM claimable c WHERE o.id = c.id
RETURNING o.id, o.recording_id::text AS recording_id, o.version, o.op, o.payload, o.attempts";

/// A fresh lease token: 128 random bits in the uuid's text form.
pub fn lease_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn ids(events: &[i64]) -> Value {
    Value::from(events.to_vec())
}

fn bad_row(what: &str) -> WardenError {
    WardenError::Conversion {
        database: Database::Postgres,
        message: format!("graph_outbox: unexpected {what}"),
    }
}

fn int(row: &Map<String, Value>, key: &str) -> Result<i64, WardenError> {
    row.get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad_row(key))
}

fn text(row: &Map<String, Value>, key: &str) -> Result<String, WardenError> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| bad_row(key))
}

fn op(row: &Map<String, Value>) -> Result<Op, WardenError> {
    match row.get("op").and_then(Value::as_str) {
        Some("upsert") => Ok(Op::Upsert),
        Some("delete") => Ok(Op::Delete),
        _ => Err(bad_row("op")),
    }
}

fn time(row: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    row.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Claims up to `limit` heads for `lease` under `token`, oldest first.
pub async fn claim(
    pg: &PostgresHandle,
    limit: u32,
    lease: Duration,
    token: &str,
) -> Result<Vec<Event>, WardenError> {
    let rows = pg
        .send(
            Sql::new(CLAIM)
                .bind(i64::from(limit))
                .bind(lease.as_secs_f64())
                .bind(token),
        )
        .await?;
    let mut events = rows
        .iter()
        .map(|row| {
            Ok(Event {
                id: int(row, "id")?,
                recording: text(row, "recording_id")?,
                version: int(row, "version")?,
                op: op(row)?,
                payload: row.get("payload").cloned().unwrap_or(Value::Null),
                attempts: u32::try_from(int(row, "attempts")?).unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, WardenError>>()?;
    events.sort_by_key(|e| e.id);
    Ok(events)
}

/// Deletes applied events, only while `token` still holds them (a projector whose lease ran
/// out cannot delete what another one has claimed since). Returns how many went.
pub async fn delete_applied(
    pg: &PostgresHandle,
    token: &str,
    events: &[i64],
) -> Result<u64, WardenError> {
    let rows = pg
        .send(
            Sql::new(
                "WITH gone AS (DELETE FROM graph_outbox WHERE lease_token = $1::uuid \
                 AND id IN (SELECT jsonb_array_elements_text($2)::bigint) RETURNING 1) \
                 SELECT count(*) AS n FROM gone",
            )
            .bind(token)
            .bind(ids(events)),
        )
        .await?;
    Ok(rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0))
}

/// Gives events back without counting anything (the graph was unreachable).
pub async fn release(pg: &PostgresHandle, token: &str, events: &[i64]) -> Result<(), WardenError> {
    pg.send(
        Sql::new(
            "UPDATE graph_outbox SET locked_until = NULL, lease_token = NULL \
             WHERE lease_token = $1::uuid AND id IN (SELECT jsonb_array_elements_text($2)::bigint)",
        )
        .bind(token)
        .bind(ids(events)),
    )
    .await?;
    Ok(())
}

/// Records a rejection: the new attempt count, `dead` or a later `run_at`, the reason.
pub async fn reject(
    pg: &PostgresHandle,
    token: &str,
    event: i64,
    rejection: super::rules::Rejection,
    error: &str,
) -> Result<(), WardenError> {
    // Bounded: a reason is for an operator's eyes, not a dump of the payload.
    let error: String = error.chars().take(2000).collect();
    pg.send(
        Sql::new(
            "UPDATE graph_outbox SET attempts = $3, \
             state = CASE WHEN $4 THEN 'dead' ELSE 'pending' END, \
             run_at = now() + make_interval(secs => $5), last_error = $6, \
             locked_until = NULL, lease_token = NULL \
             WHERE id = $1 AND lease_token = $2::uuid",
        )
        .bind(event)
        .bind(token)
        .bind(i64::from(rejection.attempts))
        .bind(rejection.dead)
        .bind(rejection.retry_after.as_secs_f64())
        .bind(error),
    )
    .await?;
    Ok(())
}

/// Counts pending and dead events and finds the oldest pending one.
pub async fn summary(pg: &PostgresHandle) -> Result<Summary, WardenError> {
    let rows = pg
        .send(Sql::new(
            "SELECT count(*) FILTER (WHERE state = 'pending') AS pending, \
             count(*) FILTER (WHERE state = 'dead') AS dead, \
             min(created_at) FILTER (WHERE state = 'pending') AS oldest FROM graph_outbox",
        ))
        .await?;
    let row = rows.first().ok_or_else(|| bad_row("empty count"))?;
    Ok(Summary {
        pending: row["pending"].as_u64().unwrap_or(0),
        dead: row["dead"].as_u64().unwrap_or(0),
        oldest_pending_at: time(row, "oldest"),
    })
}

/// Up to `limit` dead events, oldest first.
pub async fn dead_events(pg: &PostgresHandle, limit: u32) -> Result<Vec<DeadEvent>, WardenError> {
    let rows = pg
        .send(
            Sql::new(
                "SELECT id, recording_id::text AS recording_id, version, op, attempts, \
                 last_error, created_at FROM graph_outbox WHERE state = 'dead' \
                 ORDER BY id LIMIT $1",
            )
            .bind(i64::from(limit)),
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadEvent {
                id: int(row, "id")?,
                recording_id: text(row, "recording_id")?,
                version: int(row, "version")?,
                op: op(row)?,
                attempts: u32::try_from(int(row, "attempts")?).unwrap_or(0),
                last_error: row["last_error"].as_str().map(str::to_owned),
                created_at: time(row, "created_at"),
            })
        })
        .collect()
}

/// Which dead events to re-drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// One event, by id.
    One(i64),
    /// Every dead event.
    AllDead,
}

/// Re-drives dead events: pending again, attempts 0, due now. Returns the ids re-driven (an
/// id that is not dead, or does not exist, is not among them).
pub async fn retry(pg: &PostgresHandle, which: Retry) -> Result<Vec<i64>, WardenError> {
    let set = "UPDATE graph_outbox SET state = 'pending', attempts = 0, run_at = now(), \
               last_error = NULL, locked_until = NULL, lease_token = NULL";
    let sql = match which {
        Retry::One(id) => Sql::new(format!(
            "{set} WHERE state = 'dead' AND id = $1 RETURNING id"
        ))
        .bind(id),
        Retry::AllDead => Sql::new(format!("{set} WHERE state = 'dead' RETURNING id")),
    };
    let rows = pg.send(sql).await?;
    let mut ids: Vec<i64> = rows.iter().filter_map(|r| r["id"].as_i64()).collect();
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_token_is_a_uuid_in_text_form() {
        let t = lease_token();
        assert_eq!(t.len(), 32);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(t, lease_token());
    }

    #[test]
    fn rows_convert_or_say_which_column_is_wrong() {
        let row: Map<String, Value> = serde_json::from_str(r#"{"op": "drop", "id": 1}"#).unwrap();
        assert_eq!(op(&row).unwrap_err(), bad_row("op"));
        assert_eq!(int(&row, "id").unwrap(), 1);
        let row: Map<String, Value> =
            serde_json::from_str(r#"{"t": "2026-12-01T00:00:00.5Z"}"#).unwrap();
        assert!(time(&row, "t").is_some());
    }
}
