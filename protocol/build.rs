//! The contract bindings read forge's JSON artifacts at compile time; say how to make them.

fn main() {
    for name in ["GleanerToken", "WorkerRegistry", "JobMarket"] {
        let path = format!("../contracts/out/{name}.sol/{name}.json");
        println!("cargo:rerun-if-changed={path}");
        if !std::path::Path::new(&path).is_file() {
            panic!(
                "contract artifact {path} is missing: run `scripts/build-contracts` \
                 (or `scripts/setup`) before building the Rust workspace"
            );
        }
    }
}
