//! The verifier against a real anvil (settlement and slashing as the contracts see them) and
//! a real model (the embed part check).

mod chain;
mod chunks;
mod part;
