//! The WebSocket protocol of `/ws/blog/` as types: what a client may send, and every frame the
//! server sends besides the post events themselves (those are [`newspaper_domain::FeedEvent`],
//! rendered once by the dispatcher). docs/websocket.md describes the same contract in prose.

use bytestring::ByteString;
use newspaper_domain::{Timestamp, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json_body::type_name;

/// A message from the client: `{"action": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientAction {
    /// Answered with `pong`.
    Ping,
    /// Follow a group: `blog_feed` or `post.<id>`.
    Subscribe {
        /// The group.
        group: String,
    },
    /// Stop following a group.
    Unsubscribe {
        /// The group.
        group: String,
    },
    /// Log the stream in, or replace its access token with a newer one of the same user.
    Auth {
        /// An access token.
        token: String,
    },
}

/// The actions, as listed in error messages.
const ACTIONS: &str = "ping, subscribe, unsubscribe or auth";

impl ClientAction {
    /// Reads one text message; the error is the `detail` to send back.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            return Err("Messages must be JSON objects such as {\"action\": \"ping\"}.".into());
        };
        let action = match message.get("action") {
            None => return Err(format!("Missing \"action\" ({ACTIONS}).")),
            Some(Value::String(action)) => action.clone(),
            Some(other) => {
                return Err(format!("\"action\" must be a string, not {}.", type_name(other)));
            }
        };
        serde_json::from_value(Value::Object(message)).map_err(|err| {
            let field = if action == "auth" { "token" } else { "group" };
            let err = err.to_string();
            if err.starts_with("unknown variant") {
                let shown: String = action.chars().take(50).collect();
                format!("Unknown action {shown:?}; use {ACTIONS}.")
            } else if err.contains(&format!("missing field `{field}`")) {
                format!("{action} needs a \"{field}\", e.g. {}.", example(field))
            } else {
                format!("\"{field}\" must be a string.")
            }
        })
    }
}

fn example(field: &str) -> &'static str {
    if field == "token" { "{\"action\": \"auth\", \"token\": ACCESS}" } else { "\"post.42\"" }
}

/// Who a stream is authenticated as, in the `authenticated` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamUser {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub username: String,
    /// Whether the stream sees every draft.
    pub is_staff: bool,
}

/// A frame the server sends that is not a post event: `{"event": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// How many streams follow `group`.
    Presence {
        /// Always `blog_feed`.
        group: &'a str,
        /// Streams following it, on every instance.
        count: usize,
    },
    /// `since` is older than the retained history: reload, then carry on with this stream.
    ResyncRequired,
    /// The answer to `ping`.
    Pong,
    /// The answer to `subscribe`.
    Subscribed {
        /// The group now followed.
        group: &'a str,
    },
    /// The answer to `unsubscribe`.
    Unsubscribed {
        /// The group no longer followed.
        group: &'a str,
    },
    /// The last message was not understood or not allowed; the stream stays open.
    Error {
        /// Why, for humans.
        detail: &'a str,
    },
    /// The answer to `auth`: the stream's identity and when its rights end.
    Authenticated {
        /// Who the stream is.
        user: StreamUser,
        /// When the token expires; the stream closes with 4001 then unless it sends a newer one.
        #[serde(with = "newspaper_domain::rfc3339_millis")]
        expires_at: Timestamp,
    },
}

impl ServerFrame<'_> {
    /// The frame as WebSocket text.
    pub fn to_text(&self) -> ByteString {
        // Serializing these plain structs cannot fail; an empty object would be the fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_errors_say_what_is_wrong() {
        assert_eq!(ClientAction::parse(r#"{"action":"ping"}"#), Ok(ClientAction::Ping));
        assert_eq!(
            ClientAction::parse(r#"{"action":"subscribe","group":"post.4","extra":1}"#),
            Ok(ClientAction::Subscribe { group: "post.4".into() })
        );
        assert_eq!(
            ClientAction::parse(r#"{"action":"auth","token":"t"}"#),
            Ok(ClientAction::Auth { token: "t".into() })
        );
        let error = |text: &str| ClientAction::parse(text).unwrap_err();
        assert!(error("not json").contains("JSON objects"));
        assert!(error("[1]").contains("JSON objects"));
        assert!(error(r#"{"nothing":true}"#).starts_with("Missing \"action\""));
        assert!(error(r#"{"action":5}"#).contains("must be a string"));
        assert!(error(r#"{"action":"dance"}"#).starts_with("Unknown action \"dance\""));
        assert!(error(r#"{"action":"subscribe"}"#).contains("needs a \"group\""));
        assert!(error(r#"{"action":"auth"}"#).contains("needs a \"token\""));
        assert!(
            error(r#"{"action":"subscribe","group":7}"#).contains("\"group\" must be a string")
        );
    }

    #[test]
    fn frames_serialize_with_the_event_first() {
        assert_eq!(&*ServerFrame::Pong.to_text(), r#"{"event":"pong"}"#);
        assert_eq!(&*ServerFrame::ResyncRequired.to_text(), r#"{"event":"resync_required"}"#);
        assert_eq!(
            &*ServerFrame::Presence { group: "blog_feed", count: 3 }.to_text(),
            r#"{"event":"presence","group":"blog_feed","count":3}"#
        );
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:00:00.5Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let frame = ServerFrame::Authenticated {
            user: StreamUser { id: UserId(3), username: "ann".into(), is_staff: false },
            expires_at: at,
        };
        assert_eq!(
            &*frame.to_text(),
            r#"{"event":"authenticated","user":{"id":3,"username":"ann","is_staff":false},"expires_at":"2026-11-28T10:00:00.500Z"}"#
        );
    }
}
