//! What the controller answers when it does not do what was asked: a kind a caller can
//! act on and a message naming the field and the reason. The gRPC service maps the kind
//! to a status code (grpc.rs), and any other front end (the Web API) maps the same
//! errors its own way; nothing in the daemon's logic speaks a wire format.

/// How a caller can act on a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (a field out of range, an unknown value).
    Invalid,
    /// It names an agent or fault that does not exist.
    NotFound,
    /// It names something that exists already (a static agent's name).
    Conflict,
    /// The caller may not do this.
    Denied,
    /// An agent is down or cannot be reached.
    Unavailable,
    /// The fleet is not in a state to do it (a kernel lacks a feature, a fault is in the way).
    Precondition,
    /// Started and stopped part way: what was done is undone, or said.
    Aborted,
    /// A bounded table is full.
    Exhausted,
    /// An event watcher fell too far behind; it resumes from the last event it saw.
    Lagged,
    /// The controller's own fault (its state database).
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DaemonError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Denied, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Precondition, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Aborted, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}
