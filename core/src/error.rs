//! The one error type of the engine's management operations.
//!
//! Every variant maps to a stable machine-readable `code` and an HTTP status, so the server and
//! the bindings translate errors without comparing strings. No variant ever carries a secret:
//! messages name fields, ids and limits, never a presented credential.

use std::fmt;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by [`crate::Engine`] operations (not by `verify`, whose denials are
/// [`crate::Decision`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input was rejected; every problem found is listed, and nothing was written.
    Validation(Vec<String>),
    /// The named entity does not exist (or is not visible to the caller).
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state (e.g. deleting the default key).
    Conflict(String),
    /// The caller may not do this (e.g. granting a permission it does not hold).
    Forbidden(String),
    /// The store requires an active Pro plan for this operation.
    PlanRequired,
    /// The operation does not exist for this kind of entity (e.g. deleting an order).
    NotAllowed(String),
    /// The database failed; the operation was not applied.
    Storage(String),
    /// A stored record could not be read (corrupt, or written by a newer release).
    Corrupt(String),
    /// The operating system's random number generator failed.
    Entropy,
}

impl Error {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "VALIDATION",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::Conflict(_) => "CONFLICT",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::PlanRequired => "PLAN_REQUIRED",
            Error::NotAllowed(_) => "NOT_ALLOWED",
            Error::Storage(_) => "STORAGE",
            Error::Corrupt(_) => "CORRUPT",
            Error::Entropy => "ENTROPY",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Validation(_) => 400,
            Error::NotFound { .. } => 404,
            Error::Conflict(_) => 409,
            Error::Forbidden(_) | Error::PlanRequired => 403,
            Error::NotAllowed(_) => 405,
            Error::Storage(_) | Error::Corrupt(_) | Error::Entropy => 500,
        }
    }

    /// The individual problems: every validation problem, or the message itself.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Error::Validation(problems) => problems.clone(),
            other => vec![other.to_string()],
        }
    }

    /// A validation error from a list of problems.
    pub(crate) fn invalid(problems: Vec<String>) -> Self {
        debug_assert!(!problems.is_empty());
        Error::Validation(problems)
    }

    /// A not-found error. The id is echoed only when it is shaped like one of our ids (at most
    /// 24 characters of `[A-Za-z0-9_-]`): a caller that pasted a secret where an id belongs
    /// must not see it come back in an error that may be logged.
    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        let id = id.into();
        let shaped = id.len() <= 24
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        Error::NotFound {
            what,
            id: if shaped { id } else { "(not an id)".to_owned() },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Validation(problems) => {
                write!(f, "validation failed: {}", problems.join("; "))
            }
            Error::NotFound { what, id } => write!(f, "{what} `{id}` not found"),
            Error::Conflict(message) | Error::Forbidden(message) | Error::NotAllowed(message) => {
                f.write_str(message)
            }
            Error::PlanRequired => f.write_str("An active Pro subscription is required"),
            Error::Storage(message) => write!(f, "storage error: {message}"),
            Error::Corrupt(message) => write!(f, "stored data unreadable: {message}"),
            Error::Entropy => f.write_str("the operating system's random source failed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Vec<String>> for Problems {
    fn from(problems: Vec<String>) -> Self {
        Self(problems)
    }
}

/// Collects validation problems so one response can name all of them.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn new() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Adds the problems of a failed result, except those about a field already named.
    pub(crate) fn extend_from<T>(&mut self, result: Result<T>) {
        if let Err(err) = result {
            let fresh: Vec<String> = err
                .problems()
                .into_iter()
                .filter(|p| !self.mentions(p.split([':', '.']).next().unwrap_or_default()))
                .collect();
            self.0.extend(fresh);
        }
    }

    /// True when a problem about `field` is already recorded.
    pub(crate) fn mentions(&self, field: &str) -> bool {
        self.0
            .iter()
            .any(|p| p.split([':', '.']).next() == Some(field))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else the validation error listing everything.
    pub(crate) fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(self.0))
        }
    }
}

impl From<redb::DatabaseError> for Error {
    fn from(err: redb::DatabaseError) -> Self {
        match err {
            // redb's own words ("Cannot acquire lock") do not say who holds it or what to do.
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Storage(
                "the database file is already open (by a running server, or another engine in \
                 this process); one engine at a time may have it"
                    .to_owned(),
            ),
            other => Error::Storage(other.to_string()),
        }
    }
}

macro_rules! storage_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(err: $ty) -> Self {
                Error::Storage(err.to_string())
            }
        }
    )*};
}

storage_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
