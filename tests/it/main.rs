mod cli;
#[path = "../common/mod.rs"]
mod common;
mod email_flow;
mod mail;
mod proxy;
mod shutdown;
mod store;
mod versions;
