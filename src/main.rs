//! The `restash` binary: load configuration, start logging, serve until a signal.
//!
//! `restash` (no arguments) runs the gateway; `restash token …` mints a JWT and exits
//! (see [`restash::auth::mint`]; a hand-written argument parser, no clap).

use std::process::ExitCode;

use restash::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    // An optional `.env` in the working directory (not in its parents); real
    // environment variables win. A `.env` that cannot be read is an error, not a
    // half-applied configuration.
    if let Err(error) = dotenvy::from_path(".env") {
        if !error.not_found() {
            eprintln!("restash: cannot read .env: {error}");
            return ExitCode::from(2);
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("token") => {
            return match restash::auth::mint::run(&args[1..], |name| {
                std::env::var(name).ok().filter(|v| !v.is_empty())
            }) {
                Ok(jwt) => {
                    println!("{jwt}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("restash token: {error}");
                    ExitCode::from(2)
                }
            };
        }
        Some(other) => {
            eprintln!("restash: unknown command {other:?}\nusage: restash            run the gateway\n       restash token …  mint a JWT (restash token --help)");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("restash: {error}");
            return ExitCode::from(2);
        }
    };
    restash::telemetry::init(&config);

    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("restash: cannot listen on {}: {error}", config.listen);
            return ExitCode::from(1);
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.clone());
    let (token, generated) = match &config.token {
        Some(token) => (token.clone(), false),
        None => (restash::auth::generate_token(), true),
    };
    print_banner(&config, &address, &token, generated);

    match restash::serve(listener, config, token, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("restash: {error}");
            ExitCode::from(1)
        }
    }
}

fn print_banner(config: &Config, address: &str, token: &str, generated: bool) {
    let url = format!("http://{address}");
    println!("restash {} is listening", env!("CARGO_PKG_VERSION"));
    println!("  URL:   {url}");
    println!("  Redis: {}", config.redis_url_redacted());
    if generated {
        println!("  Token: {token}   (generated: set RESTASH_TOKEN to keep one)");
        println!("  Try:   curl -H \"Authorization: Bearer {token}\" -d '[\"PING\"]' {url}");
    } else {
        println!("  Token: the value of RESTASH_TOKEN");
        println!("  Try:   curl -H \"Authorization: Bearer $RESTASH_TOKEN\" -d '[\"PING\"]' {url}");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
