//! The words every layer speaks: which kind of third-party identifier an address is
//! ([`Medium`]), why it is being verified ([`Purpose`]), and what a security notice tells its
//! owner ([`Notice`]). Routes, validation, rate limits,
//! templates, delivery and the store all name them; this module imports nothing of ours, so
//! that naming a medium never pulls in the store.

use std::fmt;

/// The kind of third-party identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    Email,
    Msisdn,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Email => "email",
            Medium::Msisdn => "msisdn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Medium::Email),
            "msisdn" => Some(Medium::Msisdn),
            _ => None,
        }
    }
}

impl fmt::Display for Medium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the address is being verified: decides which message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Registration,
    PasswordReset,
    AddThreepid,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Registration => "registration",
            Purpose::PasswordReset => "password_reset",
            Purpose::AddThreepid => "add_threepid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registration" => Some(Purpose::Registration),
            "password_reset" => Some(Purpose::PasswordReset),
            "add_threepid" => Some(Purpose::AddThreepid),
            _ => None,
        }
    }
}

/// A security notice: something changed on the account of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The password was changed with a reset verified by this address.
    PasswordChanged,
    /// This address was removed from an account.
    AddressRemoved,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::PasswordChanged => "password_changed",
            Notice::AddressRemoved => "address_removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "password_changed" => Some(Notice::PasswordChanged),
            "address_removed" => Some(Notice::AddressRemoved),
            _ => None,
        }
    }
}
