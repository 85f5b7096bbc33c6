//! The built-in executors (SPEC §7): in-process `builtin:noop|echo|sleep`, the process
//! executor `builtin:shell`, and host-configured commands (rule 28).

mod command;
mod echo;
mod noop;
mod params;
mod shell;
mod sleep;

pub use self::command::CommandExecutor;
pub use self::echo::EchoExecutor;
pub use self::noop::NoopExecutor;
pub use self::shell::{SCRIPT_BYTES_MAX, ShellExecutor};
pub use self::sleep::{SLEEP_SECONDS_MAX, SleepExecutor};
