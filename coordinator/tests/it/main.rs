//! Integration tests of the coordinator: the HTTP API in-process and over sockets, the store on
//! SQLite and PostgreSQL, the scheduler's properties, and the chain watcher against anvil.

mod blob_access;
mod chain;
mod common;
mod explorer;
mod http;
mod http_batch;
mod http_conn;
mod http_work;
mod store;
