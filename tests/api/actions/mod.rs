//! Actions: triggers, on-demand calls, emits, and the sandbox's limits, over the real
//! server (and real sockets for emits).

mod bugs;
mod compile;
mod config;
mod db;
mod emits;
mod escapes;
mod logs;
mod on_demand;
mod push;
mod run;
mod sandbox;
mod stale_saves;
mod triggers;
mod versions;
