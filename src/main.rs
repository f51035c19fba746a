//! The `confab` binary: see [`confab::cli`].

fn main() -> std::process::ExitCode {
    confab::cli::main()
}
