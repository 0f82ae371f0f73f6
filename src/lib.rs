//! Tender: a containerd shim v2. The binary is `src/main.rs`; this library holds the whole
//! shim so that tests, fuzz targets and benchmarks can reach its parts.

pub mod bootstrap;
pub mod cgroups;
pub mod container;
pub mod events;
pub mod logger;
pub mod mount;
pub mod options;
pub mod process;
pub mod reaper;
pub mod runtime;
pub mod server;
pub mod service;
pub mod stdio;
