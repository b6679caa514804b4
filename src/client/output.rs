//! Writing a streaming command's results to stdout: one buffer, decimals
//! written without `fmt`, and a closed stdout (`| head -1`) treated as the
//! reader having had enough, not as an error.

use std::io::{self, BufWriter, StdoutLock, Write};

use crate::client::reader::ReadError;
use crate::error::{Error, describe};

/// Size of the stdout buffer: large writes, few syscalls.
const OUTPUT_BUFFER: usize = 64 << 10;

/// Why a streaming command stopped: its source failed, or its output did.
#[derive(Debug)]
pub(crate) enum StreamError {
    Source(ReadError),
    Output(io::Error),
}

impl From<ReadError> for StreamError {
    fn from(e: ReadError) -> Self {
        StreamError::Source(e)
    }
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Output(e)
    }
}

/// Runs `body` with a buffered, locked stdout. A broken pipe ends the
/// command quietly and successfully, as in ripgrep; other output errors are
/// failures.
pub(crate) fn to_stdout(
    body: impl FnOnce(&mut BufWriter<StdoutLock>) -> Result<(), StreamError>,
) -> Result<(), Error> {
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, io::stdout().lock());
    let result = body(&mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => Ok(()),
        Err(StreamError::Source(e)) => Err(Error::runtime(e.to_string())),
        Err(StreamError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(StreamError::Output(e)) => {
            Err(Error::runtime(format!("standard output: {}", describe(&e))))
        }
    }
}

/// Writes `v` in decimal, without going through `fmt` (the rolls of ten
/// million dice are written one by one).
pub(crate) fn write_decimal<W: Write>(out: &mut W, mut v: u64) -> io::Result<()> {
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
}
