//! The command line: parse, load the config, set up logging, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threepid_sidecar::config::{self, Config};

/// EX_CONFIG from sysexits.h: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "MSC2263 sidecar: email and phone verification for legacy Matrix homeservers"
)]
struct Cli {
    /// The TOML config file; without it, the embedded default (config.example.toml).
    #[arg(long, short, global = true, env = "THREEPID_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (the default).
    Run,
    /// Validate the config and print it, secrets redacted; exit 64 if it is refused.
    CheckConfig,
}

fn load(path: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Config::from_toml(config::EXAMPLE),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config.as_ref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("threepid-sidecar: config refused: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        print!("{}", config.redacted_toml());
        for line in threepid_sidecar::i18n::coverage_report(
            config.i18n.dir.as_deref(),
            &config.i18n.default_language,
        ) {
            eprintln!("threepid-sidecar: {line}");
        }
        return ExitCode::SUCCESS;
    }
    threepid_sidecar::telemetry::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime can be built at start-up");
    match runtime.block_on(threepid_sidecar::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            ExitCode::FAILURE
        }
    }
}
