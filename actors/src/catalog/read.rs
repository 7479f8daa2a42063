//! The catalog's reads: one statement each, through [`Sql`] (no transaction, no session
//! reset, retried by warden when nothing reached the server).
//!
//! Both read `recording_snapshot(id)`, the function that also makes every outbox payload, so a
//! recording reads the same here as in the graph's events. A page of `list` is one statement
//! however long it is (the snapshot gathers each recording's metadata and tracklist inside
//! the server): no query per recording.

use uuid::Uuid;

use super::{
    cursor::Cursor,
    error::excerpt,
    model::{ListQuery, Page, Recording, Snapshot},
    CatalogError,
};
use crate::{error::Database, PostgresHandle, Sql, WardenError};

/// The snapshot of one recording, or NULL.
const GET: &str = "SELECT recording_snapshot($1::uuid) AS snapshot";

pub(crate) async fn get(pg: &PostgresHandle, id: Uuid) -> Result<Recording, CatalogError> {
    let mut rows = pg.send(Sql::new(GET).bind(id.to_string())).await?;
    let snapshot = rows
        .pop()
        .and_then(|mut row| row.remove("snapshot"))
        .unwrap_or_default();
    if snapshot.is_null() {
        return Err(CatalogError::NotFound { what: "recording" });
    }
    Ok(Recording::from(parse(snapshot)?))
}

pub(crate) async fn list(pg: &PostgresHandle, q: &ListQuery) -> Result<Page, CatalogError> {
    let after = q.cursor.as_deref().map(Cursor::decode).transpose()?;
    let sql = page_query(q, after.as_ref());
    let rows = pg.send(sql).await?;
    let mut items = rows
        .into_iter()
        .map(|mut row| {
            let snapshot = row.remove("snapshot").unwrap_or_default();
            parse(snapshot).map(Recording::from)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One row past the page was asked for: it says whether there is a next page.
    let limit = q.limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| {
            Cursor {
                created_at: r.created_at,
                id: r.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The page's statement. Only the filters in use appear in it (rather than `$n IS NULL OR
/// ...`), so that the planner can use the `(created_at, id)` index for the keyset and the
/// metadata indexes for the filter, under a generic plan too.
fn page_query(q: &ListQuery, after: Option<&Cursor>) -> Sql {
    let mut text = String::from("SELECT r.id, r.created_at FROM recordings r");
    let mut params: Vec<serde_json::Value> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let next = |params: &mut Vec<serde_json::Value>, value: serde_json::Value| {
        params.push(value);
        params.len()
    };
    if let Some(c) = after {
        let at = next(&mut params, c.created_at_text().into());
        let id = next(&mut params, c.id.to_string().into());
        conditions.push(format!(
            "(r.created_at, r.id) > (${at}::timestamptz, ${id}::uuid)"
        ));
    }
    if let Some(key) = &q.key {
        let k = next(&mut params, key.as_str().into());
        let mut exists = format!(
            "EXISTS (SELECT 1 FROM metadata m WHERE m.recording_id = r.id AND m.key = ${k}::text"
        );
        if let Some(value) = &q.value {
            let v = next(&mut params, value.as_str().into());
            exists.push_str(&format!(" AND m.value = ${v}::text"));
        }
        exists.push(')');
        conditions.push(exists);
    }
    if !conditions.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&conditions.join(" AND "));
    }
    let limit = next(&mut params, (i64::from(q.limit) + 1).into());
    text.push_str(&format!(" ORDER BY r.created_at, r.id LIMIT ${limit}"));
    // The page's rows first, their snapshots after: however the planner runs the filter,
    // the snapshot (the expensive part) is made for the page's rows only.
    Sql {
        query: format!(
            "SELECT recording_snapshot(p.id) AS snapshot FROM ({text}) p \
             ORDER BY p.created_at, p.id"
        ),
        params,
    }
}

/// A snapshot as JSON, read into its type; failing that, the database holds something the
/// catalog did not write (a hand-edited row), which is not the caller's fault.
fn parse(snapshot: serde_json::Value) -> Result<Snapshot, CatalogError> {
    serde_json::from_value(snapshot).map_err(|e| {
        CatalogError::Unavailable(WardenError::Conversion {
            database: Database::Postgres,
            // serde quotes the offending value: only a short excerpt may appear.
            message: format!(
                "a recording snapshot does not read back: {}",
                excerpt(&e.to_string(), 80)
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_in_use_reach_the_statement() {
        let bare = page_query(&ListQuery::default(), None);
        assert!(!bare.query.contains("WHERE"), "{}", bare.query);
        assert!(bare.query.starts_with("SELECT recording_snapshot(p.id)"));
        assert_eq!(bare.params, vec![serde_json::json!(51)]);
        let c = Cursor {
            created_at: chrono::DateTime::from_timestamp_micros(1).unwrap(),
            id: Uuid::nil(),
        };
        let q = ListQuery {
            limit: 10,
            key: Some("bpm".into()),
            value: Some("128".into()),
            cursor: None,
        };
        let full = page_query(&q, Some(&c));
        assert!(full.query.contains("> ($1::timestamptz, $2::uuid)"));
        assert!(full
            .query
            .contains("m.key = $3::text AND m.value = $4::text"));
        assert!(full
            .query
            .contains("LIMIT $5) p ORDER BY p.created_at, p.id"));
        assert_eq!(full.params.len(), 5);
        assert_eq!(full.params[4], serde_json::json!(11));
    }
}
