//! Who may write what pilfered serves or reads: whoever can write into a
//! FIFO can feed chosen bytes to readers who take them for random. The rule
//! is written once, here: nobody but the owner may write, and the owner is
//! us or root.

/// Why other users could choose the bytes of a file, if they could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Owned by this uid, neither us nor root.
    Owner(u32),
    /// Its mode (shown) lets group or others write.
    Mode(u32),
}

/// Checks a file's owner `uid` and `mode` for the user `me`.
pub fn writers(uid: u32, mode: u32, me: u32) -> Result<(), Untrusted> {
    if uid != me && uid != 0 {
        Err(Untrusted::Owner(uid))
    } else if mode & 0o022 != 0 {
        Err(Untrusted::Mode(mode & 0o7777))
    } else {
        Ok(())
    }
}

/// The effective uid of this process.
pub fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_may_write_and_the_owner_is_us_or_root() {
        assert_eq!(writers(1000, 0o600, 1000), Ok(()));
        assert_eq!(writers(1000, 0o644, 1000), Ok(()));
        assert_eq!(writers(0, 0o644, 1000), Ok(()));
        assert_eq!(writers(1001, 0o600, 1000), Err(Untrusted::Owner(1001)));
        assert_eq!(writers(1000, 0o620, 1000), Err(Untrusted::Mode(0o620)));
        assert_eq!(writers(1000, 0o602, 1000), Err(Untrusted::Mode(0o602)));
        assert_eq!(
            writers(1000, 0o10666, 1000),
            Err(Untrusted::Mode(0o666)),
            "the file type bits are not shown"
        );
    }
}
