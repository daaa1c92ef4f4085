//! Who is asking, and what that lets them see and change.

use crate::{PostStatus, UserId};

/// The identity a request or a WebSocket stream acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// No (valid) credentials: sees published posts only.
    Anonymous,
    /// An authenticated, active user.
    User {
        /// The user's id.
        id: UserId,
        /// Staff see and may change everything.
        is_staff: bool,
    },
}

/// How much of one author's posts a viewer may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Published posts only.
    Public,
    /// Drafts too: the author themself, or staff.
    Privileged,
}

impl Audience {
    /// Whether a post in `status` is visible to this audience.
    pub fn can_see(self, status: PostStatus) -> bool {
        self == Audience::Privileged || status == PostStatus::Published
    }
}

impl Viewer {
    /// The user's id, if authenticated.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Viewer::Anonymous => None,
            Viewer::User { id, .. } => Some(*id),
        }
    }

    /// Whether this viewer is staff.
    pub fn is_staff(&self) -> bool {
        matches!(self, Viewer::User { is_staff: true, .. })
    }

    /// The audience this viewer belongs to for posts written by `author`.
    pub fn audience_for(&self, author: UserId) -> Audience {
        match self {
            Viewer::User { is_staff: true, .. } => Audience::Privileged,
            Viewer::User { id, .. } if *id == author => Audience::Privileged,
            _ => Audience::Public,
        }
    }

    /// Whether this viewer may see a post by `author` in `status`.
    pub fn can_see(&self, author: UserId, status: PostStatus) -> bool {
        self.audience_for(author).can_see(status)
    }

    /// Whether this viewer may edit or delete a post by `author`.
    pub fn can_modify(&self, author: UserId) -> bool {
        self.audience_for(author) == Audience::Privileged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHOR: UserId = UserId(1);

    #[test]
    fn anonymous_sees_published_only_and_modifies_nothing() {
        let v = Viewer::Anonymous;
        assert!(v.can_see(AUTHOR, PostStatus::Published));
        assert!(!v.can_see(AUTHOR, PostStatus::Draft));
        assert!(!v.can_modify(AUTHOR));
        assert_eq!(v.user_id(), None);
    }

    #[test]
    fn author_and_staff_see_drafts_and_modify() {
        let author = Viewer::User { id: AUTHOR, is_staff: false };
        let staff = Viewer::User { id: UserId(2), is_staff: true };
        for v in [author, staff] {
            assert!(v.can_see(AUTHOR, PostStatus::Draft));
            assert!(v.can_modify(AUTHOR));
        }
        assert!(staff.is_staff());
        assert!(!author.is_staff());
    }

    #[test]
    fn other_users_see_published_only() {
        let other = Viewer::User { id: UserId(3), is_staff: false };
        assert!(other.can_see(AUTHOR, PostStatus::Published));
        assert!(!other.can_see(AUTHOR, PostStatus::Draft));
        assert!(!other.can_modify(AUTHOR));
    }
}
