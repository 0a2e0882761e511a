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
    // Per model: 1 and 2 replicas (the stand-ins' two GPUs are one device), template on
    // either, both paths, and the parallel optimizer with the template on the CPU: 10 rows,
    // 6 of them training steps with phases.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|line| line.starts_with("| DataParallel,"))
        .map(|line| line.split('|').map(str::trim).collect())
        .collect();
    let throughput: Vec<_> = rows.iter().filter(|cells| cells.len() == 8).collect();
    let phases: Vec<_> = rows.iter().filter(|cells| cells.len() == 13).collect();
    assert_eq!((throughput.len(), phases.len()), (20, 12), "{stdout}");
    for cells in &throughput {
        let rate: f64 = cells[4].parse().unwrap_or(0.0);
        assert!(rate > 0.0, "samples/s of {cells:?}");
        assert!(
            cells[5].ends_with('x') && cells[6].contains(" to "),
            "{cells:?}"
        );
    }
    for cells in &phases {
        let compute: f64 = cells[4]
            .split(' ')
            .next()
            .and_then(|slowest| slowest.parse().ok())
            .unwrap_or(0.0);
        assert!(compute > 0.0, "replica compute of {cells:?}");
    }
    assert_eq!(
        stdout.matches("| bare model on gpu0, TrainStep |").count(),
        2,
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
