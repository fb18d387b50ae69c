//! The dispatch modes every behaviour is checked in.

use std::fmt;

use socketserver::dispatch::{Dispatch, Pool, Sequential, Threading};

/// A built-in dispatch mode, as the tests configure it: a pool has two workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Sequential,
    Threading,
    Pool,
}

/// Every built-in mode.
pub const MODES: [Mode; 3] = [Mode::Sequential, Mode::Threading, Mode::Pool];

/// The workers of the pool the tests build.
pub const POOL_WORKERS: usize = 2;

impl Mode {
    /// The mode with the library's default thread names.
    pub fn dispatch(self) -> Dispatch {
        match self {
            Mode::Sequential => Dispatch::from(Sequential),
            Mode::Threading => Dispatch::from(Threading::new()),
            Mode::Pool => Dispatch::from(Pool::new(POOL_WORKERS)),
        }
    }

    /// The mode, its request threads named `prefix-N` (a sequential server has none).
    pub fn named(self, prefix: &str) -> Dispatch {
        match self {
            Mode::Sequential => Dispatch::from(Sequential),
            Mode::Threading => Dispatch::from(Threading::new().thread_name(prefix)),
            Mode::Pool => Dispatch::from(Pool::new(POOL_WORKERS).thread_name(prefix)),
        }
    }

    /// The mode's name, as the echo example's `--mode` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Threading => "threading",
            Mode::Pool => "pool",
        }
    }

    /// The mode whose [`name`](Mode::name) is `name`.
    pub fn from_name(name: &str) -> Mode {
        MODES.into_iter().find(|mode| mode.name() == name).unwrap_or_else(|| panic!("no mode named {name:?}"))
    }

    /// The name of the threads a request runs on with the library's default names.
    pub fn default_thread_prefix(self) -> &'static str {
        match self {
            Mode::Sequential => "socketserver-serve",
            Mode::Threading => "socketserver-request",
            Mode::Pool => "socketserver-worker",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
