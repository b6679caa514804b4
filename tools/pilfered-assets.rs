//! Writes the man pages and shell completions that `make install` and
//! `make deb` install, generated from the clap definitions in `src/cli.rs`:
//!
//! ```text
//! pilfered-assets OUTDIR
//!   OUTDIR/man/pilfered.1, pilfered-serve.1, ... (one page per subcommand)
//!   OUTDIR/completions/pilfered.bash, _pilfered (zsh), pilfered.fish
//! ```
//!
//! A binary of its own behind the feature `assets` (`cargo build --release
//! --features assets --bin pilfered-assets`, as `make` does), rather than a
//! hidden subcommand, so that `clap_mangen` and `clap_complete` stay out of
//! the shipped binary and out of a plain `cargo build --release`. It is
//! never installed. `cargo test` builds it (the crate's dev-dependency on
//! itself turns the feature on), so the install test needs no second build.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use pilfered::internal::{Cli, DEFAULT_FIFO, DEFAULT_MOUNT};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: pilfered-assets OUTDIR");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pilfered-assets: {}: {e}", out.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&comp_dir)?;

    // As clap_mangen::generate_to does: no page for the `help` subcommand.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("pilfered {}", cmd.get_version().unwrap_or_default());
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();

    // pilfered(1): the usual page, then every subcommand's synopsis,
    // description and options, the files and the exit statuses.
    let page = Man::new(with_synopsis(cmd.clone())).source(&source);
    let mut text = Vec::new();
    page.render(&mut text)?;
    commands_section(&mut text, &subs)?;
    top_page_extras(&mut text)?;
    let subpages: Vec<String> = subs.iter().map(page_name).collect();
    let refs: Vec<&str> = subpages.iter().map(String::as_str).collect();
    see_also(&mut text, &refs)?;
    write(&man_dir.join(page.get_filename()), &text)?;

    // pilfered-serve(1) and the like.
    for sub in &subs {
        let page = Man::new(with_synopsis(sub.clone())).source(&source);
        let mut text = Vec::new();
        page.render(&mut text)?;
        see_also(&mut text, &["pilfered"])?;
        write(&man_dir.join(page.get_filename()), &text)?;
    }

    for (shell, name) in [
        (Shell::Bash, "pilfered.bash"),
        (Shell::Zsh, "_pilfered"),
        (Shell::Fish, "pilfered.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "pilfered", &mut text);
        write(&comp_dir.join(name), &text)?;
    }
    Ok(())
}

/// `cmd` with its SYNOPSIS written out: each option with its value
/// placeholder (`[--mount <DIR>]`, which clap_mangen's own synopsis leaves
/// out), `...` after what may be given again, then the positionals
/// (`<EXPR>...`) or `<COMMAND>`.
fn with_synopsis(cmd: clap::Command) -> clap::Command {
    let repeats = |a: &clap::Arg| matches!(a.get_action(), ArgAction::Count | ArgAction::Append);
    let value = |a: &clap::Arg| match a.get_value_names() {
        Some(names) if a.get_action().takes_values() => format!("<{}>", names.join("> <")),
        _ => String::new(),
    };
    let shown = |a: &clap::Arg, word: String| {
        let more = if repeats(a) { "..." } else { "" };
        if a.is_required_set() {
            format!("{word}{more}")
        } else {
            format!("[{word}]{more}")
        }
    };
    let mut words = vec![cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string()];
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let flag = match (a.get_short(), a.get_long()) {
            _ if a.is_positional() => continue,
            (Some(s), Some(l)) => format!("-{s}|--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        let word = match value(a) {
            v if v.is_empty() => flag,
            v => format!("{flag} {v}"),
        };
        words.push(shown(a, word));
    }
    for a in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        words.push(shown(a, value(a)));
    }
    if cmd.has_subcommands() {
        words.push("<COMMAND>".to_string());
    }
    let usage = words.join(" ");
    cmd.override_usage(usage)
}

/// `pilfered-serve` for the subcommand `serve` (set by `Command::build`).
fn page_name(sub: &clap::Command) -> String {
    sub.get_display_name().unwrap_or(sub.get_name()).to_string()
}

/// COMMANDS in pilfered(1): for each subcommand a subsection with its
/// synopsis, its description and its own options (the global logging
/// options and help/version are described once, above).
fn commands_section(w: &mut Vec<u8>, subs: &[clap::Command]) -> std::io::Result<()> {
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    append(w, &roff)?;
    for sub in subs {
        let own = sub
            .clone()
            .mut_arg("verbose", |a| a.hide(true))
            .mut_arg("quiet", |a| a.hide(true))
            .mut_arg("help", |a| a.hide(true))
            .mut_arg("version", |a| a.hide(true));
        let page = Man::new(with_synopsis(own));
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        if sub
            .get_arguments()
            .any(|a| !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        {
            page.render_options_section(&mut part)?;
        }
        let part = String::from_utf8_lossy(&part).into_owned();
        for line in part.lines().filter(|l| !is_preamble(l)) {
            match line {
                ".SH SYNOPSIS" => {
                    writeln!(w, ".SS \"{}\"", page_name(sub).replace('-', " "))?;
                }
                ".SH DESCRIPTION" | ".SH OPTIONS" => writeln!(w, ".PP")?,
                _ => writeln!(w, "{line}")?,
            }
        }
        writeln!(w, ".PP\nSee \\fB{}\\fR(1).", page_name(sub))?;
    }
    Ok(())
}

/// The lines each `Roff::to_writer` starts with (defining the apostrophe);
/// once per page is enough.
fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")
}

/// Appends `roff` to a page that already has the preamble.
fn append(w: &mut Vec<u8>, roff: &Roff) -> std::io::Result<()> {
    let mut text = Vec::new();
    roff.to_writer(&mut text)?;
    for line in String::from_utf8_lossy(&text).lines() {
        if !is_preamble(line) {
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

/// Sections of pilfered(1) that the clap definitions cannot say: the files
/// it serves and the exit statuses.
fn top_page_extras(w: &mut Vec<u8>) -> std::io::Result<()> {
    let mut roff = Roff::default();
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            format!("{DEFAULT_MOUNT}/bits"),
            "The FUSE file: every read() returns exactly the bytes asked for, fresh from the generator, and never end-of-file. Programs that read a file to its end never finish on it; read a fixed amount (head -c 256).",
        ),
        (
            format!("{DEFAULT_MOUNT}/stats"),
            "The daemon's counters, one 'name value' line each; pilfered status shows them.",
        ),
        (
            DEFAULT_FIFO.to_string(),
            "The named pipe serving the same stream; a read() may return fewer bytes than asked for.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(path)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success (serve: after SIGINT, SIGTERM, SIGHUP or an unmount from outside); \
         1 when something fails at run time; 2 for a usage error. Every error is one line \
         on stderr starting 'pilfered:'.",
    )]);
    append(w, &roff)
}

/// A SEE ALSO section naming the other pages and the installed README.
fn see_also(w: &mut Vec<u8>, pages: &[&str]) -> std::io::Result<()> {
    let mut roff = Roff::default();
    roff.control("SH", ["SEE ALSO"]);
    let mut items = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        items.push(bold(*page));
        items.push(roman(if i + 1 < pages.len() { "(1), " } else { "(1)" }));
    }
    roff.text(items);
    roff.control("PP", []);
    roff.text([roman(
        "pilfered-mount(8), pilfered-umount(8) and mount.fuse.pilfered(8) start and \
         stop the daemon for scripts and /etc/fstab. The README and the guides in docs/ \
         (installed in /usr/share/doc/pilfered or /usr/local/share/doc/pilfered) cover \
         them, the systemd unit and its socket, and what FIFO readers see across a \
         restart.",
    )]);
    append(w, &roff)
}

fn write(path: &Path, text: &[u8]) -> std::io::Result<()> {
    fs::write(path, text)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
