//! The `baton` command.

/// The allocator is the one process-wide choice a binary must make
/// statically; the library leaves it to whoever links it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    baton::cli::run()
}
