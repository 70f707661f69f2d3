use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match icarus::cli::run(icarus::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<icarus::cli::Interrupted>() => std::process::ExitCode::from(130),
        Err(error) => {
            eprintln!("icarus: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
