fn main() -> std::process::ExitCode {
    lwa_agent::cli::main()
}
