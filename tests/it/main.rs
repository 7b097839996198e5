mod cli;
#[path = "../common/mod.rs"]
mod common;
mod creds;
mod email_flow;
mod input_table;
mod mail;
mod msisdn;
mod policy;
mod proxy;
mod rate_limits;
mod shutdown;
mod store;
mod versions;
