use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match icarus::cli::run(icarus::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<icarus::cli::Interrupted>() => std::process::ExitCode::from(130),
        Err(error) => {
            eprintln!("icarus: {error:#}");
            // A client command's failure says how it failed (`icarus watch --help`).
            let code = error
                .downcast_ref::<icarus::client::Error>()
                .map_or(1, icarus::client::Error::exit_code);
            std::process::ExitCode::from(code)
        }
    }
}
