//! `scripts/gpu-check.sh` runs its program's CPU stand-ins here, and says "no GPU" with exit
//! code 3 on a machine without one.

use std::process::Command;

fn gpu_check(args: &[&str]) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/gpu-check.sh");
    Command::new("bash")
        .arg(script)
        .arg("run")
        .arg(env!("CARGO_BIN_EXE_gpu-check"))
        .args(args)
        .output()
        .expect("bash runs the script")
}

#[test]
fn the_script_runs_every_check_with_cpu_stand_ins() {
    let output = gpu_check(&["--cpu"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.matches("| pass |").count(),
        9,
        "three checks in three setups:\n{stdout}"
    );
    assert!(stdout.contains("every exactness check passed"), "{stdout}");
    assert_eq!(
        stdout.matches("| DataParallel, template on").count(),
        4,
        "{stdout}"
    );
}

#[test]
fn without_a_gpu_the_script_says_so_and_exits_3() {
    if burn_data_parallel::cuda_driver_present() {
        return; // A GPU machine runs the real checks: nothing to pin here.
    }
    let output = gpu_check(&[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("this machine has none (no CUDA driver found"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    assert_eq!(gpu_check(&["--steps", "0"]).status.code(), Some(2));
}
