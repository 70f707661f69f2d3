use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match icarus::cli::run(icarus::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("icarus: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
