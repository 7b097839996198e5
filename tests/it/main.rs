#[path = "../common/mod.rs"]
mod common;
mod store;
mod proxy;
mod versions;
mod cli;
mod shutdown;
mod mail;
mod email_flow;
