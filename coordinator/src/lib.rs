//! Gleaner coordinator (scaffold): the HTTP API, the store, the scheduler and the chain watcher
//! will live here (see `../shared/DESIGN.md`, "The job, end to end"). Its heavy dependencies
//! (axum, sqlx, tokio) are declared now so that their features are fixed before the first build
//! of the workspace; nothing is implemented yet.
