mod cli;
#[path = "../common/mod.rs"]
mod common;
mod creds;
mod deploy;
mod email_flow;
mod input_table;
mod mail;
mod msisdn;
mod outbox;
mod policy;
mod properties;
mod proxy;
mod rate_limits;
mod shutdown;
mod store;
mod versions;
mod web_clients;
