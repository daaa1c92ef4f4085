//! The `newspaper` binary: reads configuration, sets up logging, and serves, migrates or
//! creates a user.

mod cli;
mod scheduling;

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use newspaper_api::auth::{EMAIL_TAKEN, NewAccount, is_email_taken};
use newspaper_api::{Application, Settings};
use newspaper_domain::{Email, ValidationErrors, now};
use newspaper_persistence::{Database, PoolOptions, UserRepository};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat, Switch, UserCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.config.log_format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .init();
        }
        // One object per line with the request span flattened in, so a log shipper can
        // index `request_id` without parsing text.
        LogFormat::Json => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .init();
        }
    }
    // Before the runtime starts any thread, so that every thread inherits it.
    scheduling::apply(cli.config.scheduling);
    let settings = match cli.config.settings() {
        Ok(settings) => settings,
        Err(problem) => {
            eprintln!("newspaper: {problem}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Migrate => migrate(&settings),
        Command::CreateUser { email, password, username, staff } => {
            create_user(&settings, &email, &password, username.as_deref(), staff)
        }
        Command::User { action } => manage_user(&settings, &action),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            // `{:#}`: the error and every cause under it, on one line.
            eprintln!("newspaper: {problem:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await.context("cannot start")?;
        let handle = app.handle();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing WebSockets, finishing requests");
            handle.shutdown().await;
        });
        app.run_until_stopped().await.context("the server stopped")
    })
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn open_database(settings: &Settings) -> anyhow::Result<Database> {
    let mut options = PoolOptions::for_backend(settings.database_url.backend());
    options.max_size = 2;
    Database::connect(&settings.database_url, options)
        .with_context(|| format!("cannot open {}", settings.database_url))
}

fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let db = open_database(settings)?;
    let applied = db.run_migrations()?;
    if applied.is_empty() {
        println!("{}: up to date", db.url());
    } else {
        for version in applied {
            println!("{}: applied {version}", db.url());
        }
    }
    Ok(())
}

fn create_user(
    settings: &Settings,
    email: &str,
    password: &str,
    username: Option<&str>,
    staff: bool,
) -> anyhow::Result<()> {
    let mut errors = ValidationErrors::new();
    let Some(account) = NewAccount::check(Some(email), Some(password), username, &mut errors)
    else {
        bail!("{errors}");
    };
    let hash = newspaper_api::auth::hash_password_blocking(
        account.password.expose(),
        settings.bcrypt_cost,
    )?;
    let db = open_database(settings)?;
    db.run_migrations()?;
    let user = db
        .write_blocking(move |conn| account.create(conn, &hash, staff))
        .map_err(|e| if is_email_taken(&e) { anyhow!("email: {EMAIL_TAKEN}") } else { e.into() })?;
    println!("created user {} <{}>{}", user.id, user.email, if staff { " (staff)" } else { "" });
    Ok(())
}

fn manage_user(settings: &Settings, action: &UserCommand) -> anyhow::Result<()> {
    let (email, done) = match action {
        UserCommand::Activate { email } => (email, "activated"),
        UserCommand::Deactivate { email } => (email, "deactivated; their live streams close"),
        UserCommand::Staff { email, state: Switch::On } => (email, "now staff"),
        UserCommand::Staff { email, state: Switch::Off } => {
            (email, "no longer staff; their live streams close")
        }
    };
    let email = Email::parse(email).map_err(|e| anyhow!("{email}: {e}"))?;
    let db = open_database(settings)?;
    db.run_migrations()?;
    let mut conn = db.get()?;
    let record = UserRepository::find_by_email(&mut conn, &email)?
        .ok_or_else(|| anyhow!("no account with the email {email}"))?;
    drop(conn);
    let id = record.user.id;
    let changed = match action {
        UserCommand::Activate { .. } => {
            db.write_blocking(move |conn| UserRepository::set_active(conn, id, true, now()))
        }
        UserCommand::Deactivate { .. } => {
            db.write_blocking(move |conn| UserRepository::set_active(conn, id, false, now()))
        }
        UserCommand::Staff { state, .. } => {
            let on = *state == Switch::On;
            db.write_blocking(move |conn| UserRepository::set_staff(conn, id, on, now()))
        }
    }?;
    if changed {
        println!("{email}: {done}");
    } else {
        println!("{email}: nothing to do (already so)");
    }
    Ok(())
}
