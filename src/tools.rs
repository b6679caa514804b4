//! The consumer commands, `pilfered roll` and `pilfered nonce`: find the
//! source, stream the output to stdout through one buffer, and treat a
//! closed stdout (`| head -1`) as the reader having had enough, not as an
//! error.

use std::io::{self, BufWriter, Read, StdoutLock, Write};
use std::path::Path;

use crate::cli::{DEFAULT_FIFO, DEFAULT_MOUNT};
use crate::dice::Dice;
use crate::error::{Error, describe};
use crate::reader::DeviceReader;

/// Size of the stdout buffer: large writes, few syscalls.
const OUTPUT_BUFFER: usize = 64 << 10;

/// Why a streaming command stopped: its source failed, or its output did.
#[derive(Debug)]
pub enum StreamError {
    Source(Error),
    Output(io::Error),
}

impl From<Error> for StreamError {
    fn from(e: Error) -> Self {
        StreamError::Source(e)
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Output(e)
    }
}

/// `pilfered roll EXPR... [--from PATH]`. Every expression is checked before
/// anything is read or printed.
pub fn roll(exprs: &[String], from: Option<&Path>) -> Result<(), Error> {
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
pub fn nonce(count: u64, from: Option<&Path>) -> Result<(), Error> {
    let mut src = open_source(from)?;
    to_stdout(|out| write_nonces(&mut src, count, out))
}

/// Writes `count` lines, each a 64-bit nonce in decimal made of 8 bytes of
/// `src` read as a little-endian number.
pub fn write_nonces<R: Read, W: Write>(
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
pub fn open_source(from: Option<&Path>) -> Result<DeviceReader, Error> {
    match from {
        Some(path) => DeviceReader::open(path),
        None => DeviceReader::open_default(
            &Path::new(DEFAULT_MOUNT).join("bits"),
            Path::new(DEFAULT_FIFO),
        ),
    }
}

/// Runs `body` with a buffered, locked stdout. A broken pipe ends the
/// command quietly and successfully, as in ripgrep; other output errors are
/// failures.
fn to_stdout(
    body: impl FnOnce(&mut BufWriter<StdoutLock>) -> Result<(), StreamError>,
) -> Result<(), Error> {
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, io::stdout().lock());
    let result = body(&mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => Ok(()),
        Err(StreamError::Source(e)) => Err(e),
        Err(StreamError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(StreamError::Output(e)) => {
            Err(Error::runtime(format!("standard output: {}", describe(&e))))
        }
    }
}

/// Writes `v` in decimal, without going through `fmt` (the rolls of ten
/// million dice are written one by one).
pub fn write_decimal<W: Write>(out: &mut W, mut v: u64) -> io::Result<()> {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.write_all(&digits[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for v in [0, 7, 10, 99, 4_294_967_296, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(&mut out, v).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

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
