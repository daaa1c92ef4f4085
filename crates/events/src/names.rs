//! Group and channel names, validated once so every layer can trust them.

use std::fmt;
use std::sync::Arc;

use crate::LayerError;

/// Longest name accepted, in bytes (the Channels spec says "less than 100").
pub const MAX_NAME_LEN: usize = 99;

fn valid(name: &str, extra: &[char]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || extra.contains(&c)
        })
}

/// The name of a group, e.g. `blog_feed` or `post.42`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Validates a group name: ASCII letters, digits, `-`, `_` and `.`, at most 99 bytes.
    pub fn new(name: &str) -> Result<Self, LayerError> {
        if valid(name, &[]) {
            Ok(Self(Arc::from(name)))
        } else {
            Err(LayerError::InvalidName(name.chars().take(120).collect()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName({})", self.0)
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of one channel: `<process prefix>!<local id>`, so a layer spanning processes can
/// route a message to the process that owns the channel.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates a channel name: like a group name, plus one `!` separating the process prefix.
    pub fn new(name: &str) -> Result<Self, LayerError> {
        if valid(name, &['!']) && name.matches('!').count() <= 1 {
            Ok(Self(Arc::from(name)))
        } else {
            Err(LayerError::InvalidName(name.chars().take(120).collect()))
        }
    }

    pub(crate) fn local(prefix: &str, id: u64) -> Self {
        Self(Arc::from(format!("{prefix}!{id:x}")))
    }

    /// The process prefix, the part before `!`.
    pub fn prefix(&self) -> &str {
        self.0.split('!').next().unwrap_or_default()
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({})", self.0)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random prefix naming this process's channels.
pub(crate) fn random_prefix(label: &str) -> String {
    let mut bytes = [0u8; 6];
    // Uniqueness, not secrecy, is what matters; fall back to time if the OS refuses.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    format!("{label}.{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_channels_rules() {
        assert!(GroupName::new("blog_feed").is_ok());
        assert!(GroupName::new("post.42").is_ok());
        assert!(GroupName::new("").is_err());
        assert!(GroupName::new("a b").is_err());
        assert!(GroupName::new("a!b").is_err());
        assert!(GroupName::new(&"a".repeat(100)).is_err());
        assert!(GroupName::new(&"a".repeat(99)).is_ok());
    }

    #[test]
    fn channel_names_carry_their_process_prefix() {
        let name = ChannelName::local("specific.ab12", 255);
        assert_eq!(name.as_str(), "specific.ab12!ff");
        assert_eq!(name.prefix(), "specific.ab12");
        assert!(ChannelName::new("a!b!c").is_err());
        assert_eq!(ChannelName::new("x!1").unwrap(), ChannelName::new("x!1").unwrap());
        assert_ne!(random_prefix("p"), random_prefix("p"));
    }
}
