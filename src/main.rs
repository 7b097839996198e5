//! The command line: parse, load the config, set up logging, hand over to the library (the
//! operator's tools to [`threepid_sidecar::toolkit`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threepid_sidecar::config::{self, Config};
use threepid_sidecar::threepid::Purpose;
use threepid_sidecar::toolkit::{doctor, render, send_test};

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
    /// Check the whole chain (homeserver, identity listener, store, mail, SMS, templates);
    /// nothing is sent. Exit 0 all ok, 1 warnings, 2 failures.
    Doctor {
        /// Print a JSON array of {name, status, message}.
        #[arg(long)]
        json: bool,
    },
    /// Send one real message through the configured transport, now, and print each step.
    SendTest {
        /// Mail this address.
        #[arg(long, required_unless_present = "msisdn", conflicts_with = "msisdn")]
        email: Option<String>,
        /// Text this number (international: +447400123456).
        #[arg(long)]
        msisdn: Option<String>,
        /// The mail of this purpose: registration, password_reset, add_threepid.
        #[arg(long, default_value = "registration", value_parser = |s: &str| Purpose::parse(s).ok_or("registration, password_reset or add_threepid"))]
        purpose: Purpose,
        /// The language to write it in (default: i18n.default_language).
        #[arg(long)]
        lang: Option<String>,
    },
    /// Preview what users get.
    #[command(subcommand)]
    Templates(Templates),
}

#[derive(Subcommand)]
enum Templates {
    /// Write every mail, SMS and page, in every language, with sample values.
    Render {
        /// A new or empty folder.
        #[arg(long)]
        out: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Config::from_toml(config::EXAMPLE),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = load(cli.config.as_ref());
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Doctor { json } = command {
        return ExitCode::from(doctor::main(loaded, cli.config.as_deref(), json));
    }
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("threepid-sidecar: config refused: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = match command {
        Command::Run | Command::Doctor { .. } => return run(config),
        Command::CheckConfig => check_config(&config),
        Command::SendTest {
            email,
            msisdn,
            purpose,
            lang,
        } => {
            let target = match (email, msisdn) {
                (Some(address), _) => send_test::Target::Email(address),
                (None, Some(number)) => send_test::Target::Msisdn(number),
                (None, None) => unreachable!("clap requires --email or --msisdn"),
            };
            send_test::main(&config, &target, purpose, lang.as_deref())
        }
        Command::Templates(Templates::Render { out }) => render::main(&config, &out),
    };
    ExitCode::from(code)
}

fn check_config(config: &Config) -> u8 {
    print!("{}", config.redacted_toml());
    for line in threepid_sidecar::i18n::coverage_report(
        config.i18n.dir.as_deref(),
        &config.i18n.default_language,
    ) {
        eprintln!("threepid-sidecar: {line}");
    }
    0
}

fn run(config: Config) -> ExitCode {
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
