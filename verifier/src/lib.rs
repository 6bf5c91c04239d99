//! Gleaner verifier: compare replicas, decide, settle, slash. Not implemented yet.
