//! An API key that cannot leak through `Debug`, `Display` or an error message.

use std::fmt;

/// An API key. Its `Debug` prints `<redacted>`, it has no `Display`, and only this crate can read the value
/// (when it builds a request header).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
