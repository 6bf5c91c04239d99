//! Gleaner worker (the miner): probe, sign in, lease, run, submit. Not implemented yet.
