use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use log::LevelFilter;

use pilfered::internal::{Cli, Error};

/// How often `serve -v` logs its throughput.
const REPORT_EVERY: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `pilfered` alone: the help, on stderr, as a usage error.
            eprint!("{}", e.render());
            return ExitCode::from(2);
        }
        Err(e) => {
            return fail(&hyphened_dice(&e).unwrap_or_else(|| Error::usage(clap_one_line(&e))));
        }
    };
    init_logging(cli.verbose, cli.quiet);
    // -v adds a throughput line every few seconds.
    let report_every = (cli.verbose > 0).then_some(REPORT_EVERY);
    let result = pilfered::internal::run(cli, report_every);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `pilfered: MESSAGE` on one line and picks the exit status: 2 for
/// a usage error (the input was at fault), 1 for a failure at run time.
fn fail(e: &Error) -> ExitCode {
    eprintln!("pilfered: {e}");
    ExitCode::from(match e {
        Error::Usage(_) => 2,
        Error::Runtime(_) => 1,
    })
}

/// clap's error in one line: its first line without the "error: " prefix
/// (e.g. "unexpected argument '--bogus' found" or "invalid value '4Q' for
/// '--chunk-size <SIZE>': ..."), clap's suggestion if it has one, and for
/// unknown arguments and subcommands a pointer to the help of the command
/// that was being parsed:
///
/// ```text
/// unexpected argument '--mout' found (did you mean '--mount'?); see 'pilfered serve --help'
/// ```
fn clap_one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let rest: Vec<&str> = lines.collect();
    let possible = rest
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("[possible values:"));
    match (e.kind(), possible) {
        (_, Some(values)) => format!("{first} {values}"),
        // "...were not provided:" lists the arguments on indented lines.
        (ErrorKind::MissingRequiredArgument, None) => {
            let missing: Vec<&str> = rest
                .iter()
                .take_while(|l| l.starts_with(' '))
                .map(|l| l.trim())
                .collect();
            format!("{first} {}", missing.join(", "))
        }
        (ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand, None) => {
            let tip = clap_suggestion(e).map_or(String::new(), |t| format!(" ({t})"));
            format!("{first}{tip}; see '{} --help'", clap_command_path(e))
        }
        _ => first.to_string(),
    }
}

/// clap's "tip", to fit in a line: "did you mean '--mount'?" for a near
/// miss, or clap's own words, like how to pass a value that looks like an
/// option.
fn clap_suggestion(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let quoted = |v: &ContextValue| match v {
        ContextValue::String(s) => Some(format!("'{s}'")),
        ContextValue::Strings(v) if !v.is_empty() => Some(
            v.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(" or "),
        ),
        _ => None,
    };
    for kind in [
        ContextKind::SuggestedArg,
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedValue,
    ] {
        if let Some(s) = e.get(kind).and_then(quoted) {
            return Some(format!("did you mean {s}?"));
        }
    }
    // Other tips, already in words: "to pass '-1d6' as a value, use '-- -1d6'".
    match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) if !tips.is_empty() => Some(
            tips.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

/// `roll -3d6`: clap reads an expression that starts with a hyphen as
/// options and names only its start ('-3'); this names the whole
/// expression, and what is wrong with it, as `roll` does for any other.
fn hyphened_dice(e: &clap::Error) -> Option<Error> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(start)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if e.kind() != ErrorKind::UnknownArgument || clap_command_path(e) != "pilfered roll" {
        return None;
    }
    std::env::args()
        .skip_while(|a| a != "roll")
        .find(|a| {
            a.starts_with(start.as_str())
                && a[1..].starts_with(|c: char| c.is_ascii_digit() || c == 'd' || c == 'D')
        })
        .and_then(|expr| pilfered::internal::dice_error(&expr))
}

/// The command whose arguments clap was parsing, like "pilfered serve",
/// read from the usage line clap attaches to the error ("Usage: pilfered
/// serve [OPTIONS]").
fn clap_command_path(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let usage = match e.get(ContextKind::Usage) {
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        _ => String::new(),
    };
    let usage = usage.trim_start();
    let usage = usage.strip_prefix("Usage:").unwrap_or(usage);
    let words: Vec<&str> = usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    if words.is_empty() {
        "pilfered".to_string()
    } else {
        words.join(" ")
    }
}

/// Log levels for `-v`/`-q` counts: pilfered's messages, and the line per
/// FUSE request.
///
/// pilfered logs at info by default, debug with `-v` and trace with `-vv`.
/// Every FUSE request is logged at trace level too, under its own target
/// (`FUSE_REQUEST_LOG`), which would drown the rest of the `-vv` detail:
/// those lines stay off unless `-vvv` asks for them too. `-q` lowers both.
/// `RUST_LOG` overrides all of this (e.g.
/// `RUST_LOG=pilfered::serve::fuse::requests=trace`).
fn log_levels(verbose: u8, quiet: u8) -> (LevelFilter, LevelFilter) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let requests = if verbose >= 3 {
        level
    } else {
        level.min(LevelFilter::Warn)
    };
    (level, requests)
}

fn init_logging(verbose: u8, quiet: u8) {
    let (level, requests) = log_levels(verbose, quiet);
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module(pilfered::internal::FUSE_REQUEST_LOG, requests)
        .format_timestamp_millis()
        .parse_default_env()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_quiet_below_three_v() {
        use LevelFilter::*;
        assert_eq!(log_levels(0, 0), (Info, Warn));
        assert_eq!(log_levels(1, 0), (Debug, Warn));
        assert_eq!(log_levels(2, 0), (Trace, Warn));
        assert_eq!(log_levels(3, 0), (Trace, Trace));
        assert_eq!(log_levels(0, 1), (Warn, Warn));
        assert_eq!(log_levels(0, 2), (Error, Error));
        assert_eq!(log_levels(3, 1), (Trace, Trace));
    }
}
