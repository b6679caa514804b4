//! Dice in the usual `NdS` notation (`3d6`, `d20`, `100d100`), with an
//! optional modifier added to the sum (`3d6+2`, `2d20-1`): parsing, and
//! rolling with bytes from the device, streamed line by line.

use std::io::{Read, Write};

use crate::client::output::{StreamError, write_decimal};
use crate::client::reader::DeviceReader;
use crate::client::uniform::Uniform;
use crate::error::Error;

/// Most dice in one expression. Their output is streamed, so the limit only
/// keeps one expression from running for minutes.
pub(crate) const MAX_DICE: u64 = 10_000_000;
/// Most sides a die may have. The sum of `MAX_DICE` such dice, about
/// 4.3e16, fits easily in a `u64`.
pub(crate) const MAX_SIDES: u64 = 1 << 32;
/// Largest modifier either way. With it the sum stays far inside an `i64`.
pub(crate) const MAX_MODIFIER: u64 = 1_000_000_000;

/// What a bad expression is told to look like.
const NOTATION: &str = "expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";

/// `count` dice with `sides` sides each, numbered 1 to `sides`, and a
/// `modifier` added to their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dice {
    pub count: u64,
    pub sides: u64,
    pub modifier: i64,
}

impl Dice {
    /// Parses `NdS`, `NdS+M` or `NdS-M`: N dice (1 if left out) of S sides,
    /// and M added to or taken from the sum. Every error is a usage error
    /// naming the expression.
    pub(crate) fn parse(expr: &str) -> Result<Dice, Error> {
        let refuse = |why: &str| Error::usage(format!("roll {expr}: {why}"));
        let notation = || refuse(&format!("not dice notation; {NOTATION}"));
        let (count, rest) = expr.split_once(['d', 'D']).ok_or_else(notation)?;
        let (sides, modifier) = match rest.find(['+', '-']) {
            Some(at) => (&rest[..at], Some(rest.split_at(at).1)),
            None => (rest, None),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(count) || !digits(sides) {
            return Err(notation());
        }
        if sides.is_empty() {
            return Err(refuse(&format!("no number of sides; {NOTATION}")));
        }
        // All digits, so parsing fails only on overflow: far beyond the limit.
        let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
        let count = if count.is_empty() { 1 } else { number(count) };
        let sides = number(sides);
        if !(1..=MAX_DICE).contains(&count) {
            return Err(refuse(&format!(
                "the number of dice must be from 1 to {MAX_DICE}"
            )));
        }
        if !(1..=MAX_SIDES).contains(&sides) {
            return Err(refuse(&format!(
                "the number of sides must be from 1 to {MAX_SIDES}"
            )));
        }
        let modifier = match modifier.map(|m| m.split_at(1)) {
            None => 0,
            Some((sign, m)) => {
                if m.is_empty() || !digits(m) {
                    return Err(refuse(&format!(
                        "the modifier after '{sign}' must be a number; {NOTATION}"
                    )));
                }
                let m = number(m);
                if m > MAX_MODIFIER {
                    return Err(refuse(&format!(
                        "the modifier must be at most {MAX_MODIFIER}"
                    )));
                }
                let m = i64::try_from(m).expect("at most MAX_MODIFIER");
                if sign == "-" { -m } else { m }
            }
        };
        Ok(Dice {
            count,
            sides,
            modifier,
        })
    }

    /// Rolls the dice and writes one line: the rolls separated by spaces,
    /// the modifier if any (`+2`, `-1`), then ` = ` and the total
    /// (`4 1 6 = 11`, `4 1 6 +2 = 13`). The rolls are written as they are
    /// drawn, so even `MAX_DICE` dice take no memory. Returns the total,
    /// which a negative modifier can make negative.
    pub(crate) fn roll<R: Read, W: Write>(
        &self,
        src: &mut DeviceReader<R>,
        out: &mut W,
    ) -> Result<i64, StreamError> {
        let mut sum = 0u64;
        let mut separator: &[u8] = b"";
        Uniform::new(self.sides).sample_each(src, self.count, |v| {
            let face = v + 1;
            sum += face;
            out.write_all(separator)?;
            separator = b" ";
            write_decimal(out, face)?;
            Ok::<_, StreamError>(())
        })?;
        // At most MAX_DICE * MAX_SIDES (about 4.3e16) plus MAX_MODIFIER.
        let total = i64::try_from(sum).expect("the limits keep sums in an i64") + self.modifier;
        if self.modifier != 0 {
            write!(out, " {:+}", self.modifier)?;
        }
        writeln!(out, " = {total}")?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dice(count: u64, sides: u64) -> Dice {
        Dice {
            count,
            sides,
            modifier: 0,
        }
    }

    fn modified(count: u64, sides: u64, modifier: i64) -> Dice {
        Dice {
            count,
            sides,
            modifier,
        }
    }

    #[test]
    fn parses_the_usual_notation() {
        assert_eq!(Dice::parse("3d6"), Ok(dice(3, 6)));
        assert_eq!(Dice::parse("d20"), Ok(dice(1, 20)));
        assert_eq!(Dice::parse("100d100"), Ok(dice(100, 100)));
        assert_eq!(Dice::parse("2D8"), Ok(dice(2, 8)));
        assert_eq!(Dice::parse("03d06"), Ok(dice(3, 6)));
        assert_eq!(Dice::parse("1d1"), Ok(dice(1, 1)));
        assert_eq!(
            Dice::parse("10000000d4294967296"),
            Ok(dice(MAX_DICE, MAX_SIDES))
        );
    }

    #[test]
    fn parses_modifiers() {
        assert_eq!(Dice::parse("3d6+2"), Ok(modified(3, 6, 2)));
        assert_eq!(Dice::parse("2d20-1"), Ok(modified(2, 20, -1)));
        assert_eq!(Dice::parse("d4+0"), Ok(dice(1, 4)));
        assert_eq!(Dice::parse("d4-0"), Ok(dice(1, 4)));
        assert_eq!(Dice::parse("D8+007"), Ok(modified(1, 8, 7)));
        assert_eq!(
            Dice::parse("1d6-1000000000"),
            Ok(modified(1, 6, -1_000_000_000))
        );
        assert_eq!(
            Dice::parse("10000000d4294967296+1000000000"),
            Ok(modified(MAX_DICE, MAX_SIDES, 1_000_000_000))
        );
    }

    #[test]
    fn refuses_bad_expressions_by_name() {
        let notation = "not dice notation; expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
        let dice_range = "the number of dice must be from 1 to 10000000";
        let sides_range = "the number of sides must be from 1 to 4294967296";
        let no_sides = "no number of sides; expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
        let plus = "the modifier after '+' must be a number; expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
        let minus = "the modifier after '-' must be a number; expected NdS, NdS+M or NdS-M like 3d6, d20 or 2d20-1";
        let modifier_range = "the modifier must be at most 1000000000";
        for (expr, why) in [
            ("0d6", dice_range),
            ("10000001d6", dice_range),
            ("99999999999999999999999d6", dice_range),
            ("0d6+1", dice_range),
            ("3d0", sides_range),
            ("3d4294967297", sides_range),
            ("3d99999999999999999999999", sides_range),
            ("3d0-1", sides_range),
            ("6d", no_sides),
            ("d", no_sides),
            ("3d+6", no_sides),
            ("3d-6", no_sides),
            ("3x6", notation),
            ("", notation),
            ("36", notation),
            ("36+1", notation),
            ("+3d6", notation),
            ("3d6d6", notation),
            ("3d6x2", notation),
            (" 3d6", notation),
            ("-1d6", notation),
            ("ⅲd6", notation),
            ("3d6+", plus),
            ("3d6-", minus),
            ("3d6+-1", plus),
            ("3d6--1", minus),
            ("3d6+1+1", plus),
            ("3d6+1d6", plus),
            ("3d6+ 1", plus),
            ("3d6+1 ", plus),
            ("3d6+1000000001", modifier_range),
            ("3d6-99999999999999999999999", modifier_range),
        ] {
            assert_eq!(
                Dice::parse(expr),
                Err(Error::usage(format!("roll {expr}: {why}"))),
                "{expr:?}"
            );
        }
    }

    fn roll_line(d: Dice, bytes: &[u8]) -> (String, i64) {
        let mut src = DeviceReader::from_reader("/test/bits", bytes);
        let mut out = Vec::new();
        let sum = match d.roll(&mut src, &mut out) {
            Ok(sum) => sum,
            Err(StreamError::Source(e)) => panic!("{e}"),
            Err(StreamError::Output(e)) => panic!("{e}"),
        };
        (String::from_utf8(out).unwrap(), sum)
    }

    #[test]
    fn prints_the_rolls_then_their_sum() {
        // 252..=255 are rejected for a d6; otherwise the face is byte % 6 + 1.
        assert_eq!(
            roll_line(dice(3, 6), &[3, 252, 0, 255, 11]),
            ("4 1 6 = 11\n".to_string(), 11)
        );
        assert_eq!(roll_line(dice(1, 20), &[19]), ("20 = 20\n".to_string(), 20));
        assert_eq!(roll_line(dice(3, 1), &[]), ("1 1 1 = 3\n".to_string(), 3));
        // Four little-endian bytes per die of 2^32 sides, none rejected.
        assert_eq!(
            roll_line(dice(2, MAX_SIDES), &[[0xff; 4], [0; 4]].concat()),
            ("4294967296 1 = 4294967297\n".to_string(), 4294967297)
        );
    }

    #[test]
    fn prints_the_modifier_before_the_total() {
        // The same draws as without a modifier: it only moves the total.
        assert_eq!(
            roll_line(modified(3, 6, 2), &[3, 252, 0, 255, 11]),
            ("4 1 6 +2 = 13\n".to_string(), 13)
        );
        assert_eq!(
            roll_line(modified(2, 20, -1), &[0, 19]),
            ("1 20 -1 = 20\n".to_string(), 20)
        );
        // A total may go below zero.
        assert_eq!(
            roll_line(modified(1, 4, -10), &[1]),
            ("2 -10 = -8\n".to_string(), -8)
        );
    }

    #[test]
    fn many_dice_stream_and_sum_without_overflow() {
        let count = 200_000;
        let bytes = [0xff; 4].repeat(count);
        let (line, sum) = roll_line(dice(count as u64, MAX_SIDES), &bytes);
        assert_eq!(sum, i64::try_from(count as u64 * MAX_SIDES).unwrap());
        assert!(line.ends_with(&format!(" 4294967296 = {sum}\n")));
        assert_eq!(line.split(' ').count(), count + 2);
    }

    #[test]
    fn end_of_file_mid_roll_is_an_error() {
        let mut src = DeviceReader::from_reader("/test/bits", &[1u8, 2][..]);
        let mut out = Vec::new();
        match dice(3, 6).roll(&mut src, &mut out) {
            Err(StreamError::Source(e)) => assert_eq!(
                e.to_string(),
                "/test/bits: end of file after 2 of 3 bytes: the daemon went away"
            ),
            _ => panic!("expected an end-of-file error"),
        }
    }
}
