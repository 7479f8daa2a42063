//! Logs to journald in its native protocol (`log.format = "journald"`, or by itself when systemd
//! says stderr is the journal), through `tracing-journald`: each event's fields become journal
//! fields (`DATABASE=neo4j`, `ATTEMPT=3`, `DELAY_MS=4000`, `STATE=backoff`, `ERROR=...`), so
//! `journalctl -u warden DATABASE=neo4j` finds them. JSON lines on stderr reach the journal
//! too, but as one `MESSAGE=` that journalctl cannot query by field.
//!
//! Fields carry no prefix (`tracing-journald` would write `F_DATABASE`): warden's field names
//! (`database`, `attempt`, `delay_ms`, `state`, `error`, `actor`, ...) clash with no field
//! journald itself sets. The identifier is `warden` whatever the binary is called.

use std::{
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
};

use tracing::{span, Event, Subscriber};
use tracing_subscriber::{layer::Context, registry::LookupSpan, Layer};

use crate::config::LogFormat;

/// The device and inode of the file stderr writes to, as systemd's `JOURNAL_STREAM` names them.
pub fn stderr_identity() -> Option<(u64, u64)> {
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `JOURNAL_STREAM` (`<device>:<inode>`, in decimal) names the file `identity`.
/// systemd sets it when it connects stdout or stderr to the journal; the variable is inherited
/// by whatever the service starts, so only a match with our own stderr counts.
pub fn names(journal_stream: &str, identity: (u64, u64)) -> bool {
    let Some((dev, ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!(
        (dev.parse::<u64>(), ino.parse::<u64>()),
        (Ok(dev), Ok(ino)) if (dev, ino) == identity
    )
}

/// The format when the configuration names none: journald when stderr is the journal, pretty
/// on a terminal, JSON otherwise.
pub fn auto_format(
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
    terminal: bool,
) -> LogFormat {
    match (journal_stream, stderr) {
        (Some(stream), Some(identity)) if names(stream, identity) => LogFormat::Journald,
        _ if terminal => LogFormat::Pretty,
        _ => LogFormat::Json,
    }
}

/// The journald layer, or why journald cannot be reached (no `/run/systemd/journal/socket`:
/// a container, a machine without systemd).
pub fn layer() -> io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::Layer::new()?
        .with_syslog_identifier("warden".to_owned())
        .with_field_prefix(None))
}

/// A layer that gives `inner` a client's broken HTTP stream as a DEBUG event, or nothing when
/// the filter hides it, like [`crate::logging::DemoteClientErrors`] does for the text formats;
/// everything else unchanged. Forwards what `tracing-journald` implements (spans and events).
pub struct Demoted<L> {
    inner: L,
    show: bool,
}

impl<L> Demoted<L> {
    /// `show`: whether the filter shows the demoted event.
    pub fn new(inner: L, show: bool) -> Self {
        Self { inner, show }
    }
}

impl<S, L> Layer<S> for Demoted<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(id, values, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        match crate::logging::client_stream_error(event) {
            None => self.inner.on_event(event, ctx),
            Some(_) if !self.show => {}
            Some(message) => {
                crate::logging::with_demoted(&message, |demoted| self.inner.on_event(demoted, ctx));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_own_stderr() {
        assert!(names("64769:1234567", (64769, 1234567)));
        assert!(names("64769:1234567\n", (64769, 1234567)));
        assert!(!names("64769:1234568", (64769, 1234567)));
        assert!(!names("64770:1234567", (64769, 1234567)));
        for garbage in ["", ":", "64769", "a:b", "64769:1234567:1", "-1:5"] {
            assert!(!names(garbage, (64769, 1234567)), "{garbage:?}");
        }
    }

    #[test]
    fn the_journal_wins_when_it_is_our_stderr_then_the_terminal_then_json() {
        let me = Some((8, 42));
        assert_eq!(auto_format(Some("8:42"), me, false), LogFormat::Journald);
        assert_eq!(auto_format(Some("8:42"), me, true), LogFormat::Journald);
        // Inherited from a parent whose stderr was the journal, ours is not.
        assert_eq!(auto_format(Some("8:43"), me, false), LogFormat::Json);
        assert_eq!(auto_format(Some("8:43"), me, true), LogFormat::Pretty);
        assert_eq!(auto_format(None, me, false), LogFormat::Json);
        assert_eq!(auto_format(Some("8:42"), None, false), LogFormat::Json);
    }

    #[test]
    fn stderr_identity_is_that_of_the_open_file() {
        // Whatever stderr is under the test runner, its identity is the one fstat gives for
        // the same open file through /proc.
        let ours = stderr_identity().expect("stderr is open");
        let proc = std::fs::metadata("/proc/self/fd/2").expect("/proc/self/fd/2");
        assert_eq!(ours, (proc.dev(), proc.ino()));
    }
}
