//! protocol against a real anvil: the bindings deploy, link and grant roles, and the formulas
//! agree with the contract's settlement.

mod chain;
