//! Memory use and CPU time of this process, as the operating system
//! counts them.

/// The peak resident set size of this process in MiB (`VmHWM` of
/// `/proc/self/status`); `None` where the platform does not report it.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM` of a `/proc/<pid>/status` text, in MiB.
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: f64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU time in seconds, as the kernel splits it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTime {
    /// In the program itself.
    pub(crate) user: f64,
    /// In the kernel on its behalf (copies of reads and writes, page
    /// faults).
    pub(crate) system: f64,
}

impl CpuTime {
    /// User and system together.
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }

    /// The time from `before` to `self`.
    pub(crate) fn since(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// The CPU time of this process's children that have ended and been
/// waited for (`cutime` and `cstime` of `/proc/self/stat`, in Linux's 100
/// ticks per second); `None` where the platform does not report it. The
/// difference around one child is that child's CPU time, all its threads
/// included.
pub(crate) fn children_cpu() -> Option<CpuTime> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (user, system) = parse_children_ticks(&stat)?;
    Some(CpuTime {
        user: user as f64 / 100.0,
        system: system as f64 / 100.0,
    })
}

/// `cutime` and `cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line.
/// The command name (field 2) is in parentheses and may hold spaces: the
/// fields are counted after its closing parenthesis.
fn parse_children_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = fields.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = fields.get(17 - 3)?.parse().ok()?;
    Some((cutime, cstime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        // pid (comm with a space) state ppid ... utime stime cutime cstime ...
        let s = "42 (pru nus) S 1 42 42 0 -1 4194304 10 0 0 0 700 50 123 77 20 0 9 0 1 2 3";
        assert_eq!(parse_children_ticks(s), Some((123, 77)));
        assert_eq!(parse_children_ticks("42 (prunus) S 1"), None);
        assert_eq!(parse_children_ticks("no parenthesis"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_waited_child_adds_cpu_time() {
        let before = children_cpu().unwrap().total();
        // A child that spins about 0.3 s of CPU time.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let after = children_cpu().unwrap().total();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn parses_status_lines() {
        let s = "Name:\tprunus\nVmPeak:\t  999 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(s), Some(200.0));
        assert_eq!(parse_vm_hwm("VmRSS: 5 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM: lots\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_own_status_on_linux() {
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }
}
