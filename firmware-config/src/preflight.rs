//! Preflight checks of the machine an appliance runs on.
//!
//! Core isolation: is a worker's CPU kept free for it? A poll-mode worker
//! never sleeps, so anything else the kernel runs on its CPU — the periodic timer tick above
//! all, then other tasks, interrupts, RCU callbacks — is time in which no
//! packet is received, and sets the latency tail. On a production appliance
//! worker CPUs are taken out of the scheduler (`isolcpus=`) and out of the
//! tick (`nohz_full=`); `sluiced` says at start-up when they are not (see
//! docs/performance.md, "Tuning an appliance").
//!
//! Pure: the caller (`sluiced` at start-up) reads
//! `/sys/devices/system/cpu/{isolated,nohz_full}` and the worker thread's
//! affinity.

/// Parses a kernel CPU list (`"1-3,5"`, `""`, with a trailing newline).
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || {
            format!(
                "CPU list {:?}: {part:?} is not a CPU or a range",
                text.trim()
            )
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<usize>().map_err(|_| bad())?,
                b.parse::<usize>().map_err(|_| bad())?,
            ),
            None => {
                let c = part.parse::<usize>().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= 1 << 16 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// What is wrong with the CPUs a worker may run on (`cpus`, its affinity),
/// given the kernel's `isolated` and `nohz_full` lists (`None`: the file
/// does not exist — for `nohz_full`, a kernel built without it). Empty
/// when the worker has its CPU to itself.
pub fn check(cpus: &[usize], isolated: Option<&str>, nohz_full: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if cpus.len() > 1 {
        problems.push(format!(
            "may run on {} CPUs ({}), not one: pin it (EAL lcores) so it never migrates",
            cpus.len(),
            list(cpus)
        ));
    }
    let listed = |text: Option<&str>| -> Vec<usize> {
        text.and_then(|t| parse_cpu_list(t).ok())
            .unwrap_or_default()
    };
    let isolated = listed(isolated);
    let outside: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !isolated.contains(c))
        .collect();
    if !outside.is_empty() {
        problems.push(format!(
            "CPU {} is not isolated (isolcpus=): the scheduler may run other tasks there",
            list(&outside)
        ));
    }
    match nohz_full {
        None => problems.push(
            "this kernel has no nohz_full: the timer tick interrupts the worker's CPU \
             (HZ times a second)"
                .to_string(),
        ),
        Some(text) => {
            let nohz = listed(Some(text));
            let ticking: Vec<usize> = cpus.iter().copied().filter(|c| !nohz.contains(c)).collect();
            if !ticking.is_empty() {
                problems.push(format!(
                    "CPU {} is not in nohz_full=: the timer tick interrupts it (HZ times a second)",
                    list(&ticking)
                ));
            }
        }
    }
    problems
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("3\n").unwrap(), vec![3]);
        assert_eq!(parse_cpu_list("1-3,5,2").unwrap(), vec![1, 2, 3, 5]);
        for bad in ["x", "3-1", "1-", "-2", "1,,a", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_isolated_tickless_pinned_worker_has_no_problem() {
        assert!(check(&[2], Some("2-3\n"), Some("2-3\n")).is_empty());
    }

    #[test]
    fn each_missing_guarantee_is_named() {
        let p = check(&[0, 1], Some("\n"), None);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("2 CPUs (0,1)"), "{p:?}");
        assert!(p[1].contains("CPU 0,1 is not isolated"), "{p:?}");
        assert!(p[2].contains("no nohz_full"), "{p:?}");

        let p = check(&[1], Some("1"), Some("2"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("CPU 1 is not in nohz_full"), "{p:?}");

        let p = check(&[1], None, Some("1"));
        assert_eq!(
            p,
            vec!["CPU 1 is not isolated (isolcpus=): the scheduler may run other tasks there"]
        );
    }
}
