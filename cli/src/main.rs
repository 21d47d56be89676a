//! The `stowage` command: parse arguments, set up logging, run one command, and turn
//! any error into one clear line and a non-zero exit status.

mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = commands::Cli::parse();
    args.init_logging();
    match commands::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("stowage: error: {}", chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause its parent quotes.
fn chain(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}
