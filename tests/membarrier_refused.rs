//! Issue 15, item 10: a seccomp filter installed after the first pin that
//! refuses `membarrier` made the next collection `abort()` with no word of
//! why. It now stops with a message naming the cause and the way out, and
//! `SHARDLOCK_NO_MEMBARRIER=1` (set before the first lock) avoids it.
//!
//! Each case runs in a child process (this test binary again, filtered to
//! `child`), since a filter cannot be removed and the message ends the
//! process.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::process::Command;

use shardlock::RouterTable;

const ROLE: &str = "SHARDLOCK_TEST_SECCOMP_CHILD";

/// Installs a seccomp filter on every thread of this process that makes
/// `membarrier` fail with EPERM and allows everything else.
fn refuse_membarrier() {
    // Classic BPF over `struct seccomp_data` (the syscall number is at
    // offset 0); this test only builds for x86_64, so the arch is fixed.
    let filter = [
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        }, // ld [nr]
        libc::sock_filter {
            code: 0x15, // jeq k
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        libc::sock_filter {
            code: 0x06, // ret k
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain system calls; `program` and `filter` outlive them, and
    // the kernel copies the filter.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let installed = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &program as *const libc::sock_fprog,
        );
        assert_eq!(installed, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// The child: pins (which registers membarrier), installs the filter, then
/// collects (`clear` frees at once).
#[test]
fn child() {
    if std::env::var_os(ROLE).is_none() {
        return; // run only as a child
    }
    let table: RouterTable<u64, String> = RouterTable::new();
    for k in 0..100 {
        table.insert(k, k.to_string());
    }
    assert_eq!(table.get(&7).as_deref(), Some("7"));
    refuse_membarrier();
    table.clear();
    assert!(table.is_empty());
    println!("child: cleared under the filter");
}

fn run_child(no_membarrier: bool) -> std::process::Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, "1");
    if no_membarrier {
        command.env("SHARDLOCK_NO_MEMBARRIER", "1");
    } else {
        command.env_remove("SHARDLOCK_NO_MEMBARRIER");
    }
    command.output().unwrap()
}

/// Whether this machine gives the process membarrier at all (a container's
/// own filter may refuse it; then the crate never used it, and the refusal
/// case cannot arise).
fn membarrier_available() -> bool {
    // SAFETY: MEMBARRIER_CMD_QUERY takes no memory of ours.
    let supported = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    supported > 0 && supported & (1 << 3) != 0
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_refusal_after_registration_stops_with_a_clear_message() {
    if !membarrier_available() {
        eprintln!("SKIPPED: membarrier is unavailable here, so it is never registered");
        return;
    }
    let output = run_child(false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child went on: {stderr}");
    assert!(
        stderr.contains("membarrier")
            && stderr.contains("seccomp")
            && stderr.contains("SHARDLOCK_NO_MEMBARRIER=1"),
        "no clear message: {stderr}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn the_opt_out_keeps_working_under_the_filter() {
    let output = run_child(true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("cleared under the filter"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
