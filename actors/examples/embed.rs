//! Embedding warden in an application: the example from the README, kept compiling here.
//!
//! `cargo run -p warden-actors --example embed` against local servers (see scripts/dev-stack
//! for throwaway ones; set DATABASE_URL and NEO4J_URI to point at them).

use std::time::Duration;

use warden_actors::{Cypher, Sql, Warden, WardenError, WardenSettings};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut settings = WardenSettings::default();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        settings.postgres.url = url;
    }
    if let Ok(uri) = std::env::var("NEO4J_URI") {
        settings.neo4j.uri = uri;
    }
    // Returns at once, even with both databases down; the actors connect in the background.
    let warden = Warden::start(settings)?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // PostgreSQL: positional parameters, one JSON object per row.
    match warden
        .postgres
        .send(Sql::new("SELECT key, value FROM config WHERE key = $1").bind("thresholds"))
        .await?
    {
        Ok(rows) => println!("postgres: {rows:?}"),
        Err(e) => println!("postgres: {e}"),
    }

    // Neo4j: named parameters.
    match warden
        .neo4j
        .send(
            Cypher::new("MATCH (w:Wallet {address: $a}) RETURN w.balance AS balance")
                .param("a", "0xabc"),
        )
        .await?
    {
        Ok(rows) => println!("neo4j: {rows:?}"),
        Err(WardenError::CircuitOpen { retry_after, .. }) => {
            println!("neo4j: try again in {retry_after:?}")
        }
        Err(e) if e.is_transient() => println!("neo4j outage: {e}"),
        Err(e) => println!("neo4j rejected the statement: {e}"),
    }

    println!("{:#?}", warden.health_handle().view().ready());
    warden.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
