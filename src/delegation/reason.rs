//! Failure reason codes: the seed's "TBD" table, numbered by DESIGN.md section 3.
//!
//! A code travels in `ReasonCode` of DELEGATION_FAILURE (and in the text of a 400 answer).
//! The thousands digit groups the codes: 1 the delegation itself (operator, deadline, device
//! busy), 2 the device, 3 the protocol, 4 the bootstrap, 5 anything else. A value outside the
//! table is kept as it is, so a peer with newer codes can still be understood in part.

use std::fmt;
use std::str::FromStr;

/// A failure reason code. Unknown values are kept; [`ReasonCode::name`] is `None` for them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u16);

impl ReasonCode {
    /// 1001: an operator aborted the delegation.
    pub const CANCELLED: ReasonCode = ReasonCode(1001);
    /// 1002: a step's deadline passed (in the bootstrap approach: step 7).
    pub const TIMEOUT: ReasonCode = ReasonCode(1002);
    /// 1003: the device is already in another delegation.
    pub const BUSY: ReasonCode = ReasonCode(1003);
    /// 2001: the device did not open a session after notification.
    pub const CLIENT_UNREACHABLE: ReasonCode = ReasonCode(2001);
    /// 2002: the device answered a change with an error status (e.g. 425, 500).
    pub const CLIENT_REJECTED: ReasonCode = ReasonCode(2002);
    /// 2003: the device or the delegated server failed DM authentication.
    pub const CLIENT_AUTH_FAILED: ReasonCode = ReasonCode(2003);
    /// 3001: a message is malformed, or not valid in the current state.
    pub const BAD_MESSAGE: ReasonCode = ReasonCode(3001);
    /// 3002: a requested path does not exist or the delegating server lacks rights on it.
    pub const PATH_NOT_DELEGABLE: ReasonCode = ReasonCode(3002);
    /// 4001: the device could not get or apply the delegated server's bootstrap.
    pub const BOOTSTRAP_FAILED: ReasonCode = ReasonCode(4001);
    /// 5001: anything else; the description says what.
    pub const INTERNAL: ReasonCode = ReasonCode(5001);

    /// Every code of the table, in numeric order.
    pub const ALL: [ReasonCode; 10] = [
        ReasonCode::CANCELLED,
        ReasonCode::TIMEOUT,
        ReasonCode::BUSY,
        ReasonCode::CLIENT_UNREACHABLE,
        ReasonCode::CLIENT_REJECTED,
        ReasonCode::CLIENT_AUTH_FAILED,
        ReasonCode::BAD_MESSAGE,
        ReasonCode::PATH_NOT_DELEGABLE,
        ReasonCode::BOOTSTRAP_FAILED,
        ReasonCode::INTERNAL,
    ];

    /// The table's name of the code (`"Busy"`), or `None` for a value outside the table.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1001 => "Cancelled",
            1002 => "Timeout",
            1003 => "Busy",
            2001 => "ClientUnreachable",
            2002 => "ClientRejected",
            2003 => "ClientAuthFailed",
            3001 => "BadMessage",
            3002 => "PathNotDelegable",
            4001 => "BootstrapFailed",
            5001 => "Internal",
            _ => return None,
        })
    }

    /// When the code is used, in plain words (for timelines and operator messages).
    pub fn describe(self) -> &'static str {
        match self.0 {
            1001 => "an operator aborted the delegation",
            1002 => "a step's deadline passed",
            1003 => "the device is already in another delegation",
            2001 => "the device did not open a session after notification",
            2002 => "the device answered a change with an error status",
            2003 => "the device or the delegated server failed DM authentication",
            3001 => "a message was malformed or not valid in the current state",
            3002 => "a requested path does not exist or the delegating server lacks rights on it",
            4001 => "the device could not get or apply the delegated server's bootstrap",
            5001 => "an internal error; the description says what",
            _ => "a reason code this implementation does not know",
        }
    }

    /// True when the code is in the table.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for ReasonCode {
    /// `1003(Busy)`; a value outside the table prints as the bare number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ReasonCode {
    /// `1003 Busy`; a value outside the table prints as the bare number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} {name}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl From<u16> for ReasonCode {
    fn from(code: u16) -> ReasonCode {
        ReasonCode(code)
    }
}

impl From<ReasonCode> for u16 {
    fn from(code: ReasonCode) -> u16 {
        code.0
    }
}

/// A reason code that is not a decimal number from 1 to 65535.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a reason code (a decimal number from 1 to 65535)")]
pub struct BadReasonCode(pub String);

impl FromStr for ReasonCode {
    type Err = BadReasonCode;

    /// Reads the decimal number (surrounding XML whitespace allowed); 0 is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim_matches([' ', '\t', '\r', '\n']);
        match t.parse::<u16>() {
            Ok(n) if n != 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(ReasonCode(n)),
            _ => Err(BadReasonCode(s.chars().take(32).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_formatting() {
        assert_eq!(format!("{:?}", ReasonCode::BUSY), "1003(Busy)");
        assert_eq!(ReasonCode::BUSY.to_string(), "1003 Busy");
        assert_eq!(ReasonCode(4242).to_string(), "4242");
        assert_eq!(format!("{:?}", ReasonCode(4242)), "4242");
        assert_eq!(ReasonCode(4242).name(), None);
        assert!(!ReasonCode(4242).is_known());
        assert_eq!(
            ReasonCode::CANCELLED.describe(),
            "an operator aborted the delegation"
        );
        for code in ReasonCode::ALL {
            assert!(code.is_known());
            assert_eq!(code.0.to_string().parse::<ReasonCode>(), Ok(code));
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(" 3001\n".parse::<ReasonCode>(), Ok(ReasonCode::BAD_MESSAGE));
        assert!("0".parse::<ReasonCode>().is_err());
        assert!("+3001".parse::<ReasonCode>().is_err());
        assert!("70000".parse::<ReasonCode>().is_err());
        assert!("".parse::<ReasonCode>().is_err());
    }
}
