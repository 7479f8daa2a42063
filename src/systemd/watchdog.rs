//! The watchdog's liveness check: a `WATCHDOG=1` goes out only after a heartbeat went through
//! every actor's mailbox ([`Warden::heartbeat`]) and an HTTP request went through the health
//! server, both within the deadline. The check runs on the daemon's main event loop (the
//! one that also handles signals), so a wedged main loop stops the pings as well.
//!
//! Why not a timer that just pings: a timer proves only that some thread of the runtime is
//! alive, while systemd is asked to restart warden when it *cannot do its job*: an actor that
//! no longer drains its mailbox freezes a circuit or the health snapshot, an HTTP worker
//! that hangs leaves every dashboard blind. A database outage is not among them: actors
//! answer heartbeats themselves, whatever their database does.
//!
//! With several HTTP workers (`http.workers`), each check's request reaches one of them, in
//! turn; a single hung worker among several is noticed only by the checks it receives.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_actors::{heartbeat::HeartbeatError, Warden};

/// Why a ping was withheld.
#[derive(Debug, thiserror::Error)]
pub enum Unresponsive {
    /// An actor did not answer (see [`HeartbeatError`]).
    #[error(transparent)]
    Actors(#[from] HeartbeatError),
    /// The health server did not answer `GET /health` with 200 in time.
    #[error("the HTTP server did not answer GET /health at {addr}: {reason}")]
    Http {
        /// Where it was asked.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// How often to ping and how long a check may take, from systemd's `WATCHDOG_USEC`: a ping
/// every half of it (sd_watchdog_enabled(3)'s advice), and a check must end within half of
/// that, so that a slow but working check still pings in time.
pub fn cadence(watchdog: Duration) -> (Duration, Duration) {
    let every = watchdog / 2;
    (every, every / 2)
}

/// The address to send the health server's own check to: where it listens, with a wildcard
/// address (`0.0.0.0`, `::`) replaced by the loopback of its family.
pub fn probe_address(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// Every actor's mailbox and the HTTP server, within `within`.
pub async fn check(
    warden: &Warden,
    http: SocketAddr,
    within: Duration,
) -> Result<(), Unresponsive> {
    let (actors, http_answer) = tokio::join!(
        warden.heartbeat(within),
        tokio::time::timeout(within, get_health(http)),
    );
    actors?;
    match http_answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Unresponsive::Http {
            addr: http,
            reason: e.to_string(),
        }),
        Err(_) => Err(Unresponsive::Http {
            addr: http,
            reason: format!("no answer within {}ms", within.as_millis()),
        }),
    }
}

/// One `GET /health` on a fresh connection, through the acceptor and a worker like any
/// client's. Written out rather than taken from an HTTP client crate: one fixed request whose
/// status line is all that is read does not justify a client stack in the daemon.
async fn get_health(addr: SocketAddr) -> io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: warden-watchdog\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "answered {:?}",
            String::from_utf8_lossy(&head)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout_and_checks_within_a_quarter() {
        assert_eq!(
            cadence(Duration::from_secs(30)),
            (Duration::from_secs(15), Duration::from_millis(7_500))
        );
        assert_eq!(
            cadence(Duration::from_secs(2)),
            (Duration::from_secs(1), Duration::from_millis(500))
        );
    }

    /// A server on loopback that reads a request head and answers `answer` (nothing when
    /// `None`, keeping the connection open); returns its address.
    async fn server(answer: Option<&'static [u8]>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            match answer {
                Some(bytes) => conn.write_all(bytes).await.unwrap(),
                None => std::future::pending().await,
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_a_200_in_time_counts_as_an_answer() {
        let ok = server(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        assert!(get_health(ok).await.is_ok());
        let unavailable = server(Some(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let err = get_health(unavailable).await.unwrap_err().to_string();
        assert!(err.contains("503"), "{err}");
        let silent = server(None).await;
        let waited = tokio::time::timeout(Duration::from_millis(300), get_health(silent)).await;
        assert!(waited.is_err(), "a server that never answers is not alive");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(get_health(closed).await.is_err());
    }

    #[test]
    fn a_wildcard_bind_is_checked_on_loopback() {
        let at = |s: &str| probe_address(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(at("[::]:8080"), "[::1]:8080");
        assert_eq!(at("10.1.2.3:9000"), "10.1.2.3:9000");
    }
}
