//! The CPU scheduling policy of the server's threads. It is set on the main thread before any
//! other thread exists, and every thread inherits the policy of the thread that starts it.

use crate::cli::Scheduling;

/// Applies `policy` to the calling thread, and so to every thread it starts afterwards.
pub fn apply(policy: Scheduling) {
    match policy {
        Scheduling::Normal => {}
        #[cfg(target_os = "linux")]
        Scheduling::Batch => match batch() {
            Ok(()) => tracing::debug!("threads scheduled with SCHED_BATCH"),
            Err(reason) => tracing::warn!(%reason, "CPU scheduling left unchanged"),
        },
        #[cfg(not(target_os = "linux"))]
        Scheduling::Batch => tracing::debug!("SCHED_BATCH exists only on Linux"),
    }
}

#[cfg(target_os = "linux")]
fn batch() -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    // Setting a normal policy also sets the nice value, and only the default (0) can be kept
    // that way without privileges: a process started with another one is left as it is.
    let nice = nice_value()?;
    if nice != 0 {
        return Err(format!(
            "the process runs with nice {nice}; start it with `chrt --batch 0` to have both"
        ));
    }
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Os(Default::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    )
    .map_err(|e| e.to_string())
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
fn nice_value() -> Result<i32, String> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").map_err(|e| e.to_string())?;
    nice_field(&stat).ok_or_else(|| format!("no nice value in /proc/thread-self/stat: {stat}"))
}

/// Field 19 of a `/proc/.../stat` line. Field 2, the command name, may hold spaces and
/// parentheses, so fields are counted from the last ')'.
#[cfg(target_os = "linux")]
fn nice_field(stat: &str) -> Option<i32> {
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(16)?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_nice_value_is_field_19_whatever_the_command_name() {
        let fields: String =
            (3..=40).map(|n| format!(" {}", if n == 19 { -7 } else { n })).collect();
        assert_eq!(nice_field(&format!("4242 (actix-server ac){fields}")), Some(-7));
        assert_eq!(nice_field(&format!("4242 (a) b (c)){fields}")), Some(-7));
        assert_eq!(nice_field("4242 (cut short) S 1 2"), None);
        assert!(nice_value().is_ok());
    }
}
