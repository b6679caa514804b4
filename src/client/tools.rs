//! The consumer commands, `pilfered roll` and `pilfered nonce`: find the
//! source, then stream the results to stdout (see [`crate::client::output`]).

use std::io::{Read, Write};
use std::path::Path;

use crate::client::dice::Dice;
use crate::client::output::{StreamError, to_stdout, write_decimal};
use crate::client::reader::DeviceReader;
use crate::error::Error;
use crate::serve::config::{DEFAULT_FIFO, DEFAULT_MOUNT};

/// `pilfered roll EXPR... [--from PATH]`. Every expression is checked before
/// anything is read or printed.
pub(crate) fn roll(exprs: &[String], from: Option<&Path>) -> Result<(), Error> {
    let dice = exprs
        .iter()
        .map(|e| Dice::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut src = open_source(from)?;
    to_stdout(|out| {
        for d in &dice {
            d.roll(&mut src, out)?;
        }
        Ok(())
    })
}

/// `pilfered nonce [-n COUNT] [--from PATH]`.
pub(crate) fn nonce(count: u64, from: Option<&Path>) -> Result<(), Error> {
    let mut src = open_source(from)?;
    to_stdout(|out| write_nonces(&mut src, count, out))
}

/// Writes `count` lines, each a 64-bit nonce in decimal made of 8 bytes of
/// `src` read as a little-endian number.
pub(crate) fn write_nonces<R: Read, W: Write>(
    src: &mut DeviceReader<R>,
    count: u64,
    out: &mut W,
) -> Result<(), StreamError> {
    src.read_each(count, 8, |bytes| {
        let nonce = u64::from_le_bytes(bytes.try_into().expect("groups of 8 bytes"));
        write_decimal(out, nonce)?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// `--from PATH`, or else the default device (see
/// [`DeviceReader::open_default`]).
pub(crate) fn open_source(from: Option<&Path>) -> Result<DeviceReader, Error> {
    match from {
        Some(path) => DeviceReader::open(path).map_err(|e| Error::runtime(format!("--from {e}"))),
        None => DeviceReader::open_default(
            &Path::new(DEFAULT_MOUNT).join("bits"),
            Path::new(DEFAULT_FIFO),
        )
        .map_err(|e| Error::runtime(format!("{e} or pass --from PATH"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_little_endian_words_in_decimal() {
        let bytes = [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0x80],
            [0xff; 8],
        ]
        .concat();
        let mut src = DeviceReader::from_reader("/test/bits", &bytes[..]);
        let mut out = Vec::new();
        write_nonces(&mut src, 3, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\n9223372036854775808\n18446744073709551615\n"
        );
        assert_eq!(src.consumed(), 24);
    }
}
