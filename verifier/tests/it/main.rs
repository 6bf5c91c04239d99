//! The verifier against a real anvil: settlement and slashing as the contracts see them.

mod chain;
mod chunks;
