//! A GPU worker's kernel cache (cubecl's autotune results and compiled kernels) lives under
//! the Gleaner home, whatever directory the process starts in.

/// `gleaner embed --backend wgpu` (lavapipe here) started inside a Cargo project: cubecl's own
/// default would write its cache into that project's `target/`, where a run from any other
/// directory would not find it. Gleaner keeps it in `HOME/gpu-cache` and says so.
#[test]
fn wgpu_kernel_cache_is_kept_under_the_home_from_any_directory() {
    let home = tempfile::tempdir().unwrap();
    let models = gleaner_test_utils::gleaner_home().join("models");
    std::os::unix::fs::symlink(&models, home.path().join("models")).unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("Cargo.toml"), "").unwrap();

    let mut child = super::gleaner()
        .current_dir(project.path())
        .env("GLEANER_HOME", home.path())
        .args(["embed", "--backend", "wgpu"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"A cache that outlives the process.\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gleaner embed failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let vector: Vec<f32> = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(vector.len(), 384, "{stdout}");

    let cache = home.path().join("gpu-cache");
    assert!(
        stderr.contains(&format!("GPU kernel cache: {}", cache.display())),
        "{stderr}"
    );
    let written: u64 = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(written > 0, "nothing written under {}", cache.display());
    assert!(
        !project.path().join("target").exists(),
        "cubecl wrote into the working directory's project"
    );
}
