//! The `gleaner` binary.

fn main() -> std::process::ExitCode {
    gleaner_cli::main()
}
