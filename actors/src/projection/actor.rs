//! [`ProjectorActor`]: drains the outbox into the graph.
//!
//! Its loop: wait for a notification, the poll timer, or the end of a wait for the graph; then,
//! if the graph is connected with its circuit closed, claim a batch, apply it in one graph
//! transaction and delete its rows (fenced by the lease token); repeat at once while there is
//! work. While the graph is down or its circuit open it waits and claims nothing, so no
//! attempt is spent; a graph call that fails for a transient reason gives the batch back
//! uncounted; a rejection counts an attempt for the one event the graph rejects (a batch that
//! is rejected is re-applied event by event to find it).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, Notify};

use super::{
    cypher::{self, Projected},
    outbox::{self, Event},
    rules::{self, Disposition},
    schema::{self, Schema},
    ProjectionSettings,
};
use crate::{
    circuit::CircuitStatus,
    graph_sync::GraphSyncReport,
    guard::DeathGuard,
    health::{ComponentStatus, GraphSyncUpdate, HealthActor},
    Database, HealthHandle, Neo4jHandle, PostgresHandle, WardenError, WithGraph,
};

/// Stops the projector after the step under way; answers once its loop has ended.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopProjector;

/// What wakes the projector (a notification, a reconnect) and what stops its listener.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    pub(crate) wake: Arc<Notify>,
    pub(crate) listener_stop: Arc<Notify>,
}

/// The projector actor; see the module docs.
pub struct ProjectorActor {
    run: Option<Projector>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    /// Tells the listener to end, so that its connection is dropped inside the runtime.
    listener_stop: Arc<Notify>,
    done: Option<oneshot::Receiver<()>>,
    _guard: Option<DeathGuard>,
}

impl ProjectorActor {
    pub(crate) fn new(
        pg: PostgresHandle,
        graph: Neo4jHandle,
        health: HealthHandle,
        report_to: Addr<HealthActor>,
        settings: ProjectionSettings,
        signals: Signals,
        guard: DeathGuard,
    ) -> Self {
        let Signals {
            wake,
            listener_stop,
        } = signals;
        let stop = Arc::new(AtomicBool::new(false));
        Self {
            run: Some(Projector {
                pg,
                graph,
                health,
                report_to,
                settings,
                wake: wake.clone(),
                stop: stop.clone(),
                last_applied_at: None,
                schema: None,
                waiting: None,
                counted_at: None,
            }),
            stop,
            wake,
            listener_stop,
            done: None,
            _guard: Some(guard),
        }
    }
}

impl Actor for ProjectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(run) = self.run.take() {
            let (tx, rx) = oneshot::channel();
            self.done = Some(rx);
            ctx.spawn(actix::fut::wrap_future(async move {
                run.run().await;
                let _ = tx.send(());
            }));
        }
    }
}

impl Handler<StopProjector> for ProjectorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopProjector, _: &mut Self::Context) -> Self::Result {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        self.listener_stop.notify_one();
        let done = self.done.take();
        Box::pin(async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        })
    }
}

/// What one step found.
#[derive(Debug)]
enum Step {
    /// A batch went through (or was rejected): look for more at once.
    Worked,
    /// Nothing to claim.
    Idle,
    /// Waiting for a database: try again after this.
    Wait(Duration),
}

/// The loop's state.
struct Projector {
    pg: PostgresHandle,
    graph: Neo4jHandle,
    health: HealthHandle,
    report_to: Addr<HealthActor>,
    settings: ProjectionSettings,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    last_applied_at: Option<DateTime<Utc>>,
    schema: Option<Schema>,
    /// Why the projector is not applying right now, for health.
    waiting: Option<String>,
    counted_at: Option<Instant>,
}

/// How often health's counts are refreshed while events are being applied.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// How soon the graph's state is looked at again while it is down: reading health's snapshot
/// costs nothing, and catch-up should start within this of the graph's return.
const GRAPH_CHECK: Duration = Duration::from_millis(250);

impl Projector {
    async fn run(mut self) {
        tracing::info!(
            batch_size = self.settings.batch_size,
            poll_interval = ?self.settings.poll_interval,
            "graph projector started"
        );
        while !self.stop.load(Ordering::Acquire) {
            let step = self.step().await;
            self.count_if_due(matches!(step, Step::Worked)).await;
            let wait = match step {
                Step::Worked => continue,
                Step::Idle => self.settings.poll_interval,
                Step::Wait(d) => d.min(self.settings.poll_interval),
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("graph projector stopped");
    }

    /// Counts the outbox for health: every poll interval, and every second while applying.
    async fn count_if_due(&mut self, busy: bool) {
        let every = if busy {
            COUNT_EVERY.min(self.settings.poll_interval)
        } else {
            self.settings.poll_interval
        };
        if self.counted_at.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        match outbox::summary(&self.pg).await {
            Ok(summary) => {
                self.counted_at = Some(Instant::now());
                self.report_to.do_send(GraphSyncUpdate(GraphSyncReport {
                    pending: summary.pending,
                    oldest_pending_at: summary.oldest_pending_at,
                    dead: summary.dead,
                    last_applied_at: self.last_applied_at,
                    waiting: self.waiting.clone(),
                    lag_bound: self.settings.lag_bound,
                    poll_interval: self.settings.poll_interval,
                }));
            }
            Err(e) => tracing::debug!(error = %e, "cannot count the outbox"),
        }
    }

    /// Whether the graph may be written now; else why not and for how long.
    fn graph_ready(&self) -> Result<(), (String, Duration)> {
        let view = self.health.view();
        let Some(c) = view.components.get(&Database::Neo4j) else {
            return Ok(());
        };
        if c.status == ComponentStatus::Connected && c.circuit.state == CircuitStatus::Closed {
            return Ok(());
        }
        let why = c
            .reason
            .clone()
            .unwrap_or_else(|| format!("neo4j is {:?}", c.status));
        Err((format!("waiting for the graph: {why}"), GRAPH_CHECK))
    }

    async fn step(&mut self) -> Step {
        if let Err((why, wait)) = self.graph_ready() {
            self.waiting = Some(why);
            return Step::Wait(wait);
        }
        if self.schema.is_none() {
            match schema::ensure(&self.graph).await {
                Ok(Schema::Constrained) => {
                    tracing::info!("graph uniqueness constraints are in place");
                    self.schema = Some(Schema::Constrained);
                }
                Ok(Schema::Refused(why)) => {
                    tracing::warn!(
                        error = %why,
                        "the graph refused the uniqueness constraints (the FalkorDB stand-in has \
                         no CREATE CONSTRAINT); indexes were asked for instead, and the claim and \
                         version guard keep the projection free of duplicates"
                    );
                    self.schema = Some(Schema::Refused(why));
                }
                Err(e) => {
                    self.waiting = Some(format!("waiting for the graph: {e}"));
                    return Step::Wait(GRAPH_CHECK);
                }
            }
        }
        let token = outbox::lease_token();
        let events = match outbox::claim(
            &self.pg,
            self.settings.batch_size,
            self.settings.lease,
            &token,
        )
        .await
        {
            Ok(events) => events,
            Err(e) => {
                self.waiting = Some(format!("cannot claim events: {e}"));
                return Step::Wait(Duration::from_secs(1));
            }
        };
        if events.is_empty() {
            self.waiting = None;
            return Step::Idle;
        }
        let mut readable = Vec::with_capacity(events.len());
        for event in events {
            match cypher::project(&event) {
                Ok(p) => readable.push((event, p)),
                Err(e) => self.reject(&token, &event, &e.to_string()).await,
            }
        }
        if readable.is_empty() {
            return Step::Worked;
        }
        match self.apply(&readable).await {
            Ok(fresh) => {
                self.applied(&token, &readable, &fresh).await;
                self.waiting = None;
                Step::Worked
            }
            Err(e) => match rules::disposition(&e) {
                Disposition::Release => self.release(&token, &readable, &e).await,
                Disposition::Reject if readable.len() == 1 => {
                    self.reject(&token, &readable[0].0, &e.to_string()).await;
                    Step::Worked
                }
                // One event spoils the batch: apply them one by one to find it.
                Disposition::Reject => {
                    for (i, one) in readable.iter().enumerate() {
                        let one = std::slice::from_ref(one);
                        match self.apply(one).await {
                            Ok(fresh) => self.applied(&token, one, &fresh).await,
                            Err(e) if rules::disposition(&e) == Disposition::Reject => {
                                self.reject(&token, &one[0].0, &e.to_string()).await;
                            }
                            Err(e) => return self.release(&token, &readable[i..], &e).await,
                        }
                    }
                    Step::Worked
                }
            },
        }
    }

    async fn apply(&self, batch: &[(Event, Projected)]) -> Result<HashSet<String>, WardenError> {
        let projected = Arc::new(batch.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>());
        let budget = self.settings.statement_bytes;
        self.graph
            .send(WithGraph::new(move |graph| {
                Box::pin(cypher::apply(graph, projected.clone(), budget))
            }))
            .await
            .map(|applied| applied.fresh)
    }

    async fn applied(
        &mut self,
        token: &str,
        batch: &[(Event, Projected)],
        fresh: &HashSet<String>,
    ) {
        for (event, _) in batch {
            if fresh.contains(&event.recording) {
                tracing::debug!(
                    recording = %event.recording,
                    version = event.version,
                    op = ?event.op,
                    event = event.id,
                    "event applied"
                );
            } else {
                tracing::debug!(
                    recording = %event.recording,
                    version = event.version,
                    event = event.id,
                    "event skipped: the graph already has this version or a later one"
                );
            }
        }
        self.last_applied_at = Some(Utc::now());
        let ids: Vec<i64> = batch.iter().map(|(e, _)| e.id).collect();
        match outbox::delete_applied(&self.pg, token, &ids).await {
            Ok(n) if n as usize == ids.len() => {}
            Ok(n) => tracing::warn!(
                applied = ids.len(),
                deleted = n,
                "some applied events were no longer ours to delete (their lease ran out); \
                 whoever holds them now will find the graph at their version"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "applied events could not be deleted; they will be applied again (a no-op) \
                 once their lease runs out"
            ),
        }
    }

    async fn release(
        &mut self,
        token: &str,
        batch: &[(Event, Projected)],
        e: &WardenError,
    ) -> Step {
        tracing::info!(error = %e, events = batch.len(), "the graph is unavailable; the batch is given back uncounted");
        self.waiting = Some(format!("waiting for the graph: {e}"));
        let ids: Vec<i64> = batch.iter().map(|(e, _)| e.id).collect();
        if let Err(pe) = outbox::release(&self.pg, token, &ids).await {
            tracing::warn!(error = %pe, "cannot release the batch; its lease will run out");
        }
        Step::Wait(GRAPH_CHECK)
    }

    async fn reject(&mut self, token: &str, event: &Event, error: &str) {
        let r = rules::rejection(
            event.attempts,
            self.settings.max_attempts,
            self.settings.retry_backoff_cap,
        );
        if r.dead {
            tracing::error!(
                event = event.id,
                recording = %event.recording,
                version = event.version,
                attempts = r.attempts,
                error,
                "event is dead: its recording's later events wait until `warden outbox retry`"
            );
        } else {
            tracing::warn!(
                event = event.id,
                recording = %event.recording,
                attempts = r.attempts,
                retry_in = ?r.retry_after,
                error,
                "the graph rejected an event"
            );
        }
        if let Err(e) = outbox::reject(&self.pg, token, event.id, r, error).await {
            tracing::warn!(error = %e, "cannot record the rejection; the event's lease will run out");
        }
    }
}
