//! What a benchmark writes about the machine it ran on, beside its figures:
//! these machines are noisy, so every results file names the CPU and the
//! load before and after.

/// The CPU model, its logical cores and the memory: `Intel(R) Xeon(R) ...
/// (2 cores, 24 GiB memory)`.
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim_end())
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| format!(", {:.0} GiB memory", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{model} ({cores} cores{memory})")
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_is_described_in_words() {
        let cpu = super::cpu();
        assert!(cpu.contains(" cores"), "{cpu}");
        let load = super::load();
        assert_eq!(load.split(' ').count(), 3, "{load}");
        assert!(load.split(' ').all(|x| x.parse::<f64>().is_ok()), "{load}");
    }
}
