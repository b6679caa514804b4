use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use log::LevelFilter;

use pilfered::cli::{Cli, Command};
use pilfered::error::Error;

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
        Err(e) => return fail(&Error::usage(clap_one_line(&e))),
    };
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => args.validate().and_then(|mut cfg| {
            // -v adds a throughput line every few seconds.
            cfg.report_every = (cli.verbose > 0).then_some(REPORT_EVERY);
            pilfered::daemon::serve(cfg)
        }),
        Command::Roll(args) => pilfered::tools::roll(&args.exprs, args.source.from.as_deref()),
        Command::Nonce(args) => pilfered::tools::nonce(args.count, args.source.from.as_deref()),
        Command::Status(args) => pilfered::status::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `pilfered: MESSAGE` on one line and picks the exit status.
fn fail(e: &Error) -> ExitCode {
    eprintln!("pilfered: {e}");
    ExitCode::from(e.exit_code() as u8)
}

/// clap's first line, without its "error: " prefix, e.g. "unexpected argument
/// '--bogus' found" or "invalid value '4Q' for '--chunk-size <SIZE>': ...".
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
            format!("{first}; see 'pilfered --help'")
        }
        _ => first.to_string(),
    }
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // fuser is chatty at info level; show its messages only when asked to.
    let fuser_level = if verbose >= 2 {
        level
    } else {
        level.min(LevelFilter::Warn)
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module("fuser", fuser_level)
        .format_timestamp_millis()
        .parse_default_env()
        .init();
}
