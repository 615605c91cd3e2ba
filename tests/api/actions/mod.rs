//! Actions: triggers, on-demand calls, emits, and the sandbox's limits, over the real
//! server (and real sockets for emits).

mod bugs;
mod config;
mod db;
mod emits;
mod escapes;
mod on_demand;
mod push;
mod sandbox;
mod triggers;
