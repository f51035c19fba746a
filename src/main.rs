//! The `confab` binary: see [`confab::cli`].

/// mimalloc instead of glibc malloc: the server allocates small buffers per message and per
/// event, and glibc's malloc/free were ~9% of server CPU at saturation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    confab::cli::main()
}
