//! SyncML status codes as DM uses them (OMA DM 1.2 RepPro and TND status tables).
//!
//! [`StatusCode`] is a newtype over the wire number: codes it does not name are kept as they
//! are, and `Debug` prints the name of the ones it knows.

use std::fmt;

/// A SyncML status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

macro_rules! status_codes {
    ($($(#[$m:meta])* $name:ident = $code:literal, $text:literal;)+) => {
        impl StatusCode {
            $($(#[$m])* pub const $name: StatusCode = StatusCode($code);)+

            /// The code's meaning in plain words, if it is one DM uses.
            pub fn reason(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some($text),)+
                    _ => None,
                }
            }

            fn const_name(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some(stringify!($name)),)+
                    _ => None,
                }
            }
        }
    };
}

status_codes! {
    /// OK.
    OK = 200, "OK";
    /// Accepted for processing.
    ACCEPTED = 202, "accepted for processing";
    /// Authentication accepted for the rest of the session.
    AUTH_ACCEPTED = 212, "authentication accepted";
    /// A chunk of a large object was accepted and buffered.
    CHUNK_ACCEPTED = 213, "chunked item accepted and buffered";
    /// The operation was cancelled (a user cancelled an alert).
    OPERATION_CANCELLED = 214, "operation cancelled";
    /// Not executed (user abort, or an aborted Sequence member).
    NOT_EXECUTED = 215, "not executed";
    /// Rolled back as part of a failed Atomic.
    ATOMIC_ROLLBACK_OK = 216, "atomic roll back OK";
    /// Not modified.
    NOT_MODIFIED = 304, "not modified";
    /// The request was malformed.
    BAD_REQUEST = 400, "bad request";
    /// Invalid credentials.
    UNAUTHORIZED = 401, "invalid credentials";
    /// Forbidden, not for ACL reasons.
    FORBIDDEN = 403, "forbidden";
    /// The node does not exist.
    NOT_FOUND = 404, "not found";
    /// The command is not allowed on this node.
    COMMAND_NOT_ALLOWED = 405, "command not allowed";
    /// An optional feature (such as a property) is not supported.
    OPTIONAL_FEATURE_NOT_SUPPORTED = 406, "optional feature not supported";
    /// Credentials are missing.
    MISSING_CREDENTIALS = 407, "missing credentials";
    /// The user did not answer in time.
    REQUEST_TIMEOUT = 408, "request timeout";
    /// The command was incomplete.
    INCOMPLETE_COMMAND = 412, "incomplete command";
    /// The data is too large.
    REQUEST_ENTITY_TOO_LARGE = 413, "request entity too large";
    /// The URI is too long.
    URI_TOO_LONG = 414, "URI too long";
    /// The media type or format is not supported.
    UNSUPPORTED_MEDIA_TYPE = 415, "unsupported media type or format";
    /// The requested range cannot be satisfied.
    RANGE_NOT_SATISFIABLE = 416, "requested range not satisfiable";
    /// The node already exists.
    ALREADY_EXISTS = 418, "already exists";
    /// The device is full.
    DEVICE_FULL = 420, "device full";
    /// A large object's size did not match.
    SIZE_MISMATCH = 424, "size mismatch";
    /// The ACL denies the command.
    PERMISSION_DENIED = 425, "permission denied";
    /// The command failed.
    COMMAND_FAILED = 500, "command failed";
    /// The command is not implemented.
    NOT_IMPLEMENTED = 501, "command not implemented";
    /// The service is unavailable.
    SERVICE_UNAVAILABLE = 503, "service unavailable";
    /// A gateway timed out.
    GATEWAY_TIMEOUT = 504, "gateway timeout";
    /// A processing error.
    PROCESSING_ERROR = 506, "processing error";
    /// An Atomic failed.
    ATOMIC_FAILED = 507, "atomic failed";
    /// The data store failed.
    DATA_STORE_FAILURE = 510, "data store failure";
    /// Cancelling failed.
    CANCEL_FAILED = 514, "cancel failed";
    /// An Atomic could not be rolled back.
    ATOMIC_ROLLBACK_FAILED = 516, "atomic roll back failed";
    /// An Atomic's responses do not fit in one message.
    ATOMIC_RESPONSE_TOO_LARGE = 517, "atomic response too large to fit";
}

impl StatusCode {
    /// True for 2xx codes.
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.const_name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{} ({reason})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_unknown_codes() {
        assert_eq!(
            format!("{:?}", StatusCode::PERMISSION_DENIED),
            "425(PERMISSION_DENIED)"
        );
        assert_eq!(StatusCode(299).to_string(), "299");
        assert_eq!(StatusCode::NOT_FOUND.to_string(), "404 (not found)");
        assert!(StatusCode::AUTH_ACCEPTED.is_success());
        assert!(!StatusCode::ALREADY_EXISTS.is_success());
    }
}
