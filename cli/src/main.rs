//! The `gleaner` binary.

fn main() -> std::process::ExitCode {
    tune_malloc();
    gleaner_cli::main()
}

/// glibc's allocator at first hands blocks of 128 KiB and more straight from the kernel and
/// returns them on free (raising that threshold only as such blocks are freed), and trims the
/// heap's free top: a model pass's large buffers (activations, a verification's 12 MiB of
/// logits) then faulted their pages in again on each of the first passes, and the first
/// teacher-forced check after generating ran ~30% slower than later ones. Fixed thresholds
/// keep blocks up to 32 MiB (the most glibc allows) in the heap and the heap's free memory in
/// the process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: `mallopt` only sets allocator parameters; this runs before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
