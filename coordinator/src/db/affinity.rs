//! SQLite's writer chain on one CPU.
//!
//! Every statement of a write is two hand-offs: the writer's thread ([`super::writer_runtime`])
//! passes it to sqlx's connection thread and waits, and the connection thread passes the rows
//! back, one at a time. On two CPUs, each hand-off wakes the other CPU; on a virtual machine,
//! waking an idle CPU is an interrupt through the hypervisor, and a write transaction makes a
//! dozen such round trips per op. In `gleaner bench coordinator` (256 workers, batch 64, 8,000
//! tasks, 2-core VM), the writer was busy all the time while both CPUs were half idle:
//! 14.4–15.4k round trips/s; with the writer's two threads held on one CPU (by `taskset`, from
//! outside), 20.0–20.5k. Here the coordinator does it itself: the writer's thread holds itself
//! to one CPU, and the connection thread, started from it, inherits that (a new thread starts
//! with its creator's CPU mask).
//!
//! Everything else (HTTP, signatures, reads through the readers' connections) still runs on
//! every CPU; so does everything on PostgreSQL, which has no writer thread. `auto` picks the
//! same CPU in every process: coordinators sharing a host (tests do) stack their writers on
//! it, and `off` or a CPU each spreads them.
//!
//! Only connections opened on the writer's thread inherit its CPU: the one the migrations open
//! at start, which is the whole pool at the default size of 1. A larger `--db-pool-size` opens
//! more from other threads, and those run anywhere.

use std::str::FromStr;
use std::sync::OnceLock;

/// Where the SQLite writer's threads run (`gleaner coordinator run --sqlite-writer-cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterCpu {
    /// One CPU of those the process may use, the last one, when it may use two or more.
    #[default]
    Auto,
    /// Wherever the operating system puts them.
    Off,
    /// This CPU (numbered as the kernel numbers them, from 0).
    Cpu(usize),
}

impl FromStr for WriterCpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            n => n.parse().map(Self::Cpu).map_err(|_| {
                format!("{s:?} is not a CPU: use auto, off or a CPU number (0, 1, ...)")
            }),
        }
    }
}

static CHOICE: OnceLock<WriterCpu> = OnceLock::new();

/// Sets where the writer's threads run, for the whole process: a CPU it may not use is
/// refused, with why. The first choice stands (the first SQLite store's writes make
/// [`WriterCpu::Auto`] when none was set): asked for another afterwards, it says which.
pub fn set_writer_cpu(choice: WriterCpu) -> Result<(), String> {
    imp::usable(choice)?;
    let chosen = *CHOICE.get_or_init(|| choice);
    if chosen == choice {
        Ok(())
    } else {
        Err(format!(
            "this process's SQLite writer already runs with {chosen:?}, not {choice:?}"
        ))
    }
}

/// Holds the calling thread to the CPU [`set_writer_cpu`] chose (or [`WriterCpu::Auto`]'s);
/// the CPU, or `None` when it is left free. A CPU the process may not use leaves the thread
/// free and says so in the log.
pub(super) fn hold_this_thread() -> Option<usize> {
    let choice = *CHOICE.get_or_init(WriterCpu::default);
    let result = imp::hold(choice);
    match result {
        Ok(cpu) => cpu,
        Err(why) => {
            tracing::warn!(target: "coordinator", ?choice, %why, "the SQLite writer runs on any CPU");
            None
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::WriterCpu;

    /// The CPUs the calling thread may run on.
    pub(crate) fn allowed() -> std::io::Result<Vec<usize>> {
        // SAFETY: a zeroed `cpu_set_t` is a valid empty set, and the kernel writes at most
        // `size_of::<cpu_set_t>()` bytes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok((0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect())
        }
    }

    /// The CPU `choice` names among those this process may use (`None`: leave it free), or
    /// why it names none.
    fn target(choice: WriterCpu) -> Result<Option<usize>, String> {
        // `off` reads no mask: it works wherever the mask cannot be read.
        let mask = || allowed().map_err(|e| format!("cannot read the CPU mask: {e}"));
        match choice {
            WriterCpu::Off => Ok(None),
            WriterCpu::Auto => {
                let allowed = mask()?;
                Ok(if allowed.len() < 2 {
                    None
                } else {
                    allowed.last().copied()
                })
            }
            WriterCpu::Cpu(cpu) => {
                let allowed = mask()?;
                if allowed.contains(&cpu) {
                    Ok(Some(cpu))
                } else {
                    Err(format!(
                        "CPU {cpu} is not one this process may use ({allowed:?})"
                    ))
                }
            }
        }
    }

    /// Whether `choice` names a CPU this process may use (auto and off always do).
    pub(super) fn usable(choice: WriterCpu) -> Result<(), String> {
        target(choice).map(drop)
    }

    pub(super) fn hold(choice: WriterCpu) -> Result<Option<usize>, String> {
        let Some(cpu) = target(choice)? else {
            return Ok(None);
        };
        // SAFETY: as in `allowed`; `cpu` is below CPU_SETSIZE, being in the kernel's mask.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(format!(
                    "cannot hold the thread to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(Some(cpu))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::WriterCpu;

    pub(super) fn usable(choice: WriterCpu) -> Result<(), String> {
        hold(choice).map(|_| ())
    }

    pub(super) fn hold(choice: WriterCpu) -> Result<Option<usize>, String> {
        match choice {
            WriterCpu::Auto | WriterCpu::Off => Ok(None),
            WriterCpu::Cpu(_) => Err("CPU affinity is only set on Linux".into()),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(super) use imp::allowed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_parses_and_explains_bad_input() {
        assert_eq!("auto".parse(), Ok(WriterCpu::Auto));
        assert_eq!("off".parse(), Ok(WriterCpu::Off));
        assert_eq!("3".parse(), Ok(WriterCpu::Cpu(3)));
        let err = "first".parse::<WriterCpu>().unwrap_err();
        assert!(err.contains("auto, off or a CPU number"), "{err}");
        assert!("-1".parse::<WriterCpu>().is_err());
    }

    /// The first choice stands for the process (`Auto`, the default, so that other tests in
    /// this process see what they would have anyway).
    #[test]
    fn a_later_choice_is_refused_with_the_one_in_force() {
        assert_eq!(set_writer_cpu(WriterCpu::Auto), Ok(()));
        assert_eq!(set_writer_cpu(WriterCpu::Auto), Ok(()));
        let why = set_writer_cpu(WriterCpu::Off).unwrap_err();
        assert!(why.contains("already runs with Auto, not Off"), "{why}");
    }

    /// Auto holds a thread to the last CPU it may use when it may use two or more, and
    /// leaves it alone otherwise; a CPU outside the mask is refused and changes nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn holding_a_thread_sets_its_mask() {
        std::thread::spawn(|| {
            let before = allowed().unwrap();
            let outside = before.last().unwrap() + 1;
            assert!(imp::hold(WriterCpu::Cpu(outside)).is_err());
            let why = set_writer_cpu(WriterCpu::Cpu(outside)).unwrap_err();
            assert!(why.contains("not one this process may use"), "{why}");
            assert_eq!(allowed().unwrap(), before, "a refused CPU changes nothing");
            assert_eq!(imp::hold(WriterCpu::Off), Ok(None));
            assert_eq!(allowed().unwrap(), before);
            let held = imp::hold(WriterCpu::Auto).unwrap();
            if before.len() >= 2 {
                assert_eq!(held, before.last().copied());
                assert_eq!(allowed().unwrap(), vec![*before.last().unwrap()]);
            } else {
                assert_eq!((held, allowed().unwrap()), (None, before));
            }
        })
        .join()
        .unwrap();
    }
}
