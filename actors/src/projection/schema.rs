//! Uniqueness constraints on the projected ids, issued when the projector first reaches the
//! graph. `MERGE` alone does not prevent duplicates under concurrent writers (neo4j/neo4j
//! #12674); a constraint does, and gives the lookups by uuid an index.
//!
//! The statements are Neo4j 5's. A graph that rejects them for a non-transient reason (the
//! FalkorDB stand-in has no `CREATE CONSTRAINT` in Cypher: its constraints are a Redis
//! command) gets a plain index on the same property instead, where it accepts one, and the
//! rejection is logged once: the projection still works, with the version guard and the claim
//! (one projector per recording at a time) keeping it free of duplicates.

use crate::{neo4j::Cypher, projection::rules, Neo4jHandle, WardenError};

/// The labels whose `uuid` is unique.
pub const LABELS: [&str; 4] = ["Recording", "Metadata", "Tracklist", "Track"];

/// `CREATE CONSTRAINT <label>_uuid IF NOT EXISTS FOR (n:<Label>) REQUIRE n.uuid IS UNIQUE`.
pub fn constraint(label: &str) -> String {
    format!(
        "CREATE CONSTRAINT {}_uuid IF NOT EXISTS FOR (n:{label}) REQUIRE n.uuid IS UNIQUE",
        label.to_lowercase()
    )
}

/// The fallback where constraints are refused: `CREATE INDEX FOR (n:<Label>) ON (n.uuid)`.
pub fn index(label: &str) -> String {
    format!("CREATE INDEX FOR (n:{label}) ON (n.uuid)")
}

/// What became of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Every constraint exists.
    Constrained,
    /// The graph refused the constraints (the first refusal is kept); indexes were asked for.
    Refused(String),
}

/// Issues the constraints (and the fallback indexes). `Err` only for an outage: try again
/// when the graph is back.
pub async fn ensure(graph: &Neo4jHandle) -> Result<Schema, WardenError> {
    let mut refused = None;
    for label in LABELS {
        match graph.send(Cypher::new(constraint(label))).await {
            Ok(_) => {}
            Err(e) if rules::disposition(&e) == rules::Disposition::Reject => {
                refused.get_or_insert_with(|| e.to_string());
                // An index that already exists is refused too; either way there is one.
                match graph.send(Cypher::new(index(label))).await {
                    Ok(_) => {}
                    Err(e) if rules::disposition(&e) == rules::Disposition::Reject => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(match refused {
        None => Schema::Constrained,
        Some(why) => Schema::Refused(why),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_each_label() {
        assert_eq!(
            constraint("Recording"),
            "CREATE CONSTRAINT recording_uuid IF NOT EXISTS FOR (n:Recording) REQUIRE n.uuid IS UNIQUE"
        );
        assert_eq!(index("Track"), "CREATE INDEX FOR (n:Track) ON (n.uuid)");
    }
}
