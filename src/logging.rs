//! Structured logs: pretty on a terminal, journald's native protocol when stderr is the journal
//! (see [`crate::journald`]), one JSON object per line otherwise (log shippers). Every state
//! transition, retry, breaker change and backoff delay is one event, emitted by the actors
//! with the database, attempt, delay and a sanitized error as fields.
//!
//! One rewrite happens on the way out: actix-http reports every broken client stream (a
//! malformed request, a reset connection) as an ERROR, so any client could flood the error log
//! of a health endpoint. Those events are shown at DEBUG instead (see [`DemoteClientErrors`]).

use std::io::IsTerminal;

use tracing::{field::Field, Event, Level, Metadata, Subscriber};
use tracing_core::{callsite::Callsite, metadata::Kind, subscriber::Interest};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, MakeWriter},
    registry::LookupSpan,
    util::SubscriberInitExt,
    EnvFilter,
};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. The level was validated with the configuration; `RUST_LOG`,
/// when set, wins, for one-off debugging without editing the file.
pub fn init(cfg: &LogConfig) {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.level.clone());
    let format = cfg.format.unwrap_or_else(|| {
        crate::journald::auto_format(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            crate::journald::stderr_identity(),
            std::io::stderr().is_terminal(),
        )
    });
    // A second init (tests that run the daemon in-process) keeps the first subscriber.
    let _ = subscriber(&level, &cfg.level, format, std::io::stderr).try_init();
}

/// The filter directives for `level`. The drivers' own chatter (neo4rs logs every pool it
/// creates at info) is held at warn unless the level names them.
fn directives(level: &str) -> String {
    let mut directives = level.to_owned();
    for driver in ["neo4rs", "sqlx"] {
        if !level.contains(driver) {
            directives.push_str(&format!(",{driver}=warn"));
        }
    }
    directives
}

/// The subscriber `init` installs, writing to `writer`; `fallback` is used when `level` (from
/// `RUST_LOG`) does not parse.
fn subscriber<W>(
    level: &str,
    fallback: &str,
    format: LogFormat,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = || {
        EnvFilter::try_new(directives(level))
            .or_else(|_| EnvFilter::try_new(fallback))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // Whether the filter shows a demoted event: asked of a throwaway subscriber with the same
    // filter, since a formatter cannot consult the filter of the subscriber it runs in.
    let show_demoted = {
        use tracing_subscriber::layer::SubscriberExt;
        tracing_subscriber::registry()
            .with(filter())
            .enabled(&DEMOTED)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(writer);
    let format_json = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(false);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .event_format(DemoteClientErrors::new(format_json, show_demoted))
                .finish(),
        ),
        LogFormat::Pretty => Box::new(
            builder
                .event_format(DemoteClientErrors::new(
                    tracing_subscriber::fmt::format().compact(),
                    show_demoted,
                ))
                .finish(),
        ),
        LogFormat::Journald => match crate::journald::layer() {
            Ok(journald) => {
                use tracing_subscriber::layer::SubscriberExt;
                Box::new(
                    tracing_subscriber::registry()
                        .with(filter())
                        .with(crate::journald::Demoted::new(journald, show_demoted)),
                )
            }
            Err(e) => {
                // Logs must go somewhere: the format a service manager's log collector reads.
                eprintln!("warden: cannot reach journald ({e}); logging JSON lines to stderr");
                Box::new(
                    builder
                        .json()
                        .event_format(DemoteClientErrors::new(format_json, show_demoted))
                        .finish(),
                )
            }
        },
    }
}

/// Where actix-http reports a client's broken stream.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

/// The start of the messages actix-http logs at ERROR for what a client did, not for what
/// warden or actix did: a request that does not parse (a 64 KB path, 1,000 headers, bytes
/// that are not HTTP), and a connection the client broke. The dispatcher's other errors
/// (`internal error`, a failing response body, `write zero`) stay ERROR: they would be bugs.
const CLIENT_STREAM_ERRORS: &[&str] = &[
    "stream error: request parse error",
    "stream error: I/O error",
];

/// The callsite of [`DEMOTED`]; never registered, since no macro emits through it.
struct DemotedCallsite;

static DEMOTED_CALLSITE: DemotedCallsite = DemotedCallsite;

/// A client's broken stream, at DEBUG, under actix-http's own target so that a level naming
/// `actix_http` shows it.
static DEMOTED: Metadata<'static> = tracing_core::metadata! {
    name: "client stream error",
    target: DISPATCHER,
    level: Level::DEBUG,
    fields: &["message"],
    callsite: &DEMOTED_CALLSITE,
    kind: Kind::EVENT,
};

impl Callsite for DemotedCallsite {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &DEMOTED
    }
}

/// An event formatter that writes a client's broken stream (see [`CLIENT_STREAM_ERRORS`]) as a
/// DEBUG event with the same message, or nothing when the filter hides DEBUG for
/// [`DISPATCHER`]; every other event goes to `inner` unchanged. A formatter, because tracing
/// gives no other place to change an event's level: filters only keep or drop.
pub struct DemoteClientErrors<F> {
    inner: F,
    /// Whether the filter enables [`DEMOTED`], decided once: the filter does not change.
    show: bool,
}

impl<F> DemoteClientErrors<F> {
    fn new(inner: F, show: bool) -> Self {
        Self { inner, show }
    }
}

/// The `message` field of an event, as text.
#[derive(Default)]
struct Message(Option<String>);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// The message of `event` if it is a client's broken stream.
pub(crate) fn client_stream_error(event: &Event<'_>) -> Option<String> {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || meta.target() != DISPATCHER {
        return None;
    }
    let mut message = Message::default();
    event.record(&mut message);
    message
        .0
        .filter(|m| CLIENT_STREAM_ERRORS.iter().any(|p| m.starts_with(p)))
}

impl<S, N, F> FormatEvent<S, N> for DemoteClientErrors<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(message) = client_stream_error(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.show {
            // Nothing written is nothing logged.
            return Ok(());
        }
        with_demoted(&message, |demoted| {
            self.inner.format_event(ctx, writer, demoted)
        })
        .unwrap_or(Ok(()))
    }
}

/// Calls `f` with a client's broken stream `message` as a DEBUG event (see [`DEMOTED`]).
pub(crate) fn with_demoted<R>(message: &str, f: impl FnOnce(&Event<'_>) -> R) -> Option<R> {
    let fields = DEMOTED.fields();
    let field = fields.field("message")?;
    let values = [(&field, Some(&message as &dyn tracing::Value))];
    let values = fields.value_set(&values);
    Some(f(&Event::new(&DEMOTED, &values)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// What actix-http logs for one malformed request and one bug of its own, at `level`.
    fn logged(level: &str) -> String {
        let out = Captured::default();
        let subscriber = subscriber(level, "info", LogFormat::Json, out.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                target: "actix_http::h1::dispatcher",
                "stream error: {}",
                "request parse error: invalid Header provided"
            );
            tracing::error!(target: "actix_http::h1::dispatcher", "stream error: internal error");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_clients_malformed_request_is_debug_not_error() {
        let info = logged("info");
        let lines: Vec<&str> = info.lines().collect();
        assert_eq!(lines.len(), 1, "{info}");
        assert!(
            lines[0].contains(r#""level":"ERROR""#) && lines[0].contains("internal error"),
            "actix's own failure stays an error: {info}"
        );

        for level in ["debug", "warden=info,actix_http=debug"] {
            let debug = logged(level);
            let demoted = debug
                .lines()
                .find(|l| l.contains("invalid Header provided"))
                .unwrap_or_else(|| panic!("{level}: not shown: {debug}"));
            assert!(demoted.contains(r#""level":"DEBUG""#), "{demoted}");
            assert!(
                demoted.contains(r#""target":"actix_http::h1::dispatcher""#),
                "{demoted}"
            );
            assert!(
                demoted.contains(
                    r#""message":"stream error: request parse error: invalid Header provided""#
                ),
                "{demoted}"
            );
        }
    }
}
