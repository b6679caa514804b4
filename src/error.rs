//! The error type of the daemon and the commands: a message for the user,
//! and whether the input was at fault or the system (`main` turns that into
//! the exit status).

use std::fmt;
use std::io;

/// What went wrong, worded for the person who ran the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The command line asked for something impossible or unsafe.
    Usage(String),
    /// The system refused or failed at run time.
    Runtime(String),
}

impl Error {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// A run-time failure.
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// An I/O error's description without Rust's " (os error N)" suffix, e.g.
/// "No such file or directory".
pub(crate) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// `text` safe to print on a terminal: every control character (C0, DEL
/// and C1, escape sequences included) as `\xNN` or `\u{NNNN}`, so that
/// nothing read from a file or the command line can move the cursor,
/// recolour or retitle the user's terminal.
pub(crate) fn printable(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c) {
            n @ (0..=0x1f | 0x7f) => write!(out, "\\x{n:02x}").expect("writing to a String"),
            n @ 0x80..=0x9f => write!(out, "\\u{{{n:04x}}}").expect("writing to a String"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_every_control_character() {
        assert_eq!(printable("plain /mnt/p, \u{e9}"), "plain /mnt/p, \u{e9}");
        assert_eq!(
            printable("\u{1b}[31mred\u{7}\n\u{7f}\u{9b}"),
            "\\x1b[31mred\\x07\\x0a\\x7f\\u{009b}"
        );
    }

    #[test]
    fn describe_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe(&e), "No such file or directory");
        assert_eq!(describe(&io::Error::other("custom")), "custom");
    }
}
