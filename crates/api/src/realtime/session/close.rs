//! How a stream ends, and the close code each ending gets (docs/websocket.md has the table).

use actix_http::error::PayloadError;
use actix_ws::{CloseCode, CloseReason, ProtocolError};
use newspaper_domain::Seq;
use newspaper_events::ChannelReceiver;

/// What actix-ws says when fragments add up past `max_continuation_size`; it has no variant of
/// its own, so this text is the only way to tell it from a broken socket (a test pins it).
const CONTINUATION_TOO_LARGE: &str = "Exceeded maximum continuation size";

/// The access token that granted the stream's rights expired, and no newer one came.
pub(super) const TOKEN_EXPIRED: u16 = 4001;
/// The user's credentials changed (password, deactivation, staff rights).
pub(super) const CREDENTIALS_REVOKED: u16 = 4003;

/// How a session ends.
#[derive(Debug)]
pub(super) enum Exit {
    /// Send a close frame with this code and reason.
    Close(CloseCode, String),
    /// The peer is gone; nothing to send.
    Gone,
}

impl Exit {
    pub(super) fn close(code: CloseCode, reason: impl Into<String>) -> Self {
        Exit::Close(code, reason.into())
    }

    /// The client closed: answer with its code (RFC 6455 §5.5.1).
    pub(super) fn closed_by_client(reason: Option<CloseReason>) -> Self {
        Exit::close(reason.map_or(CloseCode::Normal, |r| r.code), "")
    }

    pub(super) fn shutdown() -> Self {
        Exit::close(CloseCode::Away, "server shutting down")
    }

    pub(super) fn token_expired() -> Self {
        Exit::close(CloseCode::Other(TOKEN_EXPIRED), "token expired")
    }

    pub(super) fn revoked() -> Self {
        Exit::close(CloseCode::Other(CREDENTIALS_REVOKED), "credentials revoked")
    }

    /// The close for a stream whose buffer overflowed.
    pub(super) fn lagged(resume: Seq) -> Self {
        Exit::close(
            CloseCode::Again,
            format!("too slow: events were dropped; reconnect with ?since={}", resume.0),
        )
    }

    /// The database could not be read for the stream (replay, revocation check).
    pub(super) fn history_unavailable() -> Self {
        Exit::close(CloseCode::Again, "history temporarily unavailable; resume with since")
    }

    /// The close for a frame the client should not have sent (RFC 6455 §7.4.1): too big is
    /// 1009, text that is not UTF-8 is 1007, anything else breaks the protocol (1002). A
    /// connection that ended under the stream is no frame at all: the client is gone (1006),
    /// and nothing is sent.
    pub(super) fn bad_frame(err: &ProtocolError, max_message_bytes: usize) -> Self {
        match err {
            ProtocolError::Io(io) if connection_ended(io) => Exit::Gone,
            ProtocolError::Overflow => too_big(max_message_bytes),
            ProtocolError::Io(io) if io.to_string() == CONTINUATION_TOO_LARGE => {
                too_big(max_message_bytes)
            }
            ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                Exit::close(CloseCode::Invalid, "text message is not valid UTF-8")
            }
            other => Exit::close(CloseCode::Protocol, other.to_string()),
        }
    }
}

/// Whether the client's bytes stopped because the connection ended (closed or reset without a
/// close frame): the HTTP/1 dispatcher then ends the request's payload as incomplete.
fn connection_ended(io: &std::io::Error) -> bool {
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<PayloadError>())
        .is_some_and(|payload| matches!(payload, PayloadError::Incomplete(_) | PayloadError::Io(_)))
}

fn too_big(max_message_bytes: usize) -> Exit {
    Exit::close(CloseCode::Size, format!("message larger than {max_message_bytes} bytes"))
}

/// Waits for room to queue a write, but not past the point where the client has already
/// lost: its event buffer overflowed, or the layer shut down (its channel closes). Room comes
/// as soon as the connection takes the queued bytes; while it cannot write, it does not poll
/// the session at all (module `connection`).
pub(super) async fn guarded(
    write: impl std::future::Future<Output = ()>,
    receiver: &ChannelReceiver,
    resume: Seq,
) -> Result<(), Exit> {
    tokio::select! {
        biased;
        () = write => Ok(()),
        () = receiver.lagged() => Err(Exit::lagged(resume)),
    }
}
