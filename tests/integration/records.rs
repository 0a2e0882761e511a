//! Saving through the template: files written from a `DataParallel` are byte-identical to the
//! bare model's and load both ways.

use std::path::{Path, PathBuf};

use burn::backend::ndarray::NdArrayDevice;
use burn::module::Module;
use burn::record::{
    BinFileRecorder, CompactRecorder, FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder,
    PrettyJsonFileRecorder,
};
use burn_data_parallel::DataParallel;
use burn_data_parallel_tests::*;

/// A fresh directory for one test's files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bdp-records-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

fn only_file_in(dir: &Path) -> Vec<u8> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("dir exists")
        .map(|e| e.expect("readable entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "one file per save: {entries:?}");
    std::fs::read(entries.remove(0)).expect("readable file")
}

fn check_recorder<R: FileRecorder<NdAutodiff>>(recorder: R, name: &str) {
    let host = NdArrayDevice::Cpu;
    let model = initialised(Normalised::<NdAutodiff>::new(4, 3, &host));
    let dp = DataParallel::new(model.clone(), nd_devices(2)).expect("valid devices");

    let (bare_dir, dp_dir) = (
        scratch_dir(&format!("{name}-bare")),
        scratch_dir(&format!("{name}-dp")),
    );
    model
        .clone()
        .save_file(bare_dir.join("model"), &recorder)
        .expect("bare model saves");
    dp.clone()
        .save_file(dp_dir.join("model"), &recorder)
        .expect("DataParallel saves");
    let (bare_bytes, dp_bytes) = (only_file_in(&bare_dir), only_file_in(&dp_dir));
    assert_eq!(
        dp_bytes, bare_bytes,
        "{name}: the files are byte for byte the same"
    );

    // Load the DataParallel's file into a bare model, and the bare model's file into a
    // DataParallel; both must hold what the bare model's own file gives back.
    let fresh = || Normalised::<NdAutodiff>::new(4, 3, &host);
    let reference = fresh()
        .load_file(bare_dir.join("model"), &recorder, &host)
        .expect("bare file loads into a bare model");
    let bare_from_dp = fresh()
        .load_file(dp_dir.join("model"), &recorder, &host)
        .expect("DataParallel file loads into a bare model");
    let dp_from_bare = DataParallel::new(fresh(), nd_devices(2))
        .expect("valid devices")
        .load_file(bare_dir.join("model"), &recorder, &host)
        .expect("bare file loads into a DataParallel");
    assert_eq!(
        float_params(&bare_from_dp),
        float_params(&reference),
        "{name}"
    );
    assert_eq!(
        float_params(dp_from_bare.template()),
        float_params(&reference),
        "{name}"
    );
    assert_eq!(
        float_params(&reference).len(),
        6,
        "weights, bias, gamma, beta, two running stats"
    );

    let _ = std::fs::remove_dir_all(bare_dir);
    let _ = std::fs::remove_dir_all(dp_dir);
}

#[test]
fn named_mpk_files_are_the_templates_and_load_both_ways() {
    check_recorder(
        NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
        "named-mpk",
    );
}

#[test]
fn compact_files_are_the_templates_and_load_both_ways() {
    check_recorder(CompactRecorder::new(), "compact");
}

#[test]
fn bincode_files_are_the_templates_and_load_both_ways() {
    check_recorder(BinFileRecorder::<FullPrecisionSettings>::new(), "bin");
}

#[test]
fn json_files_are_the_templates_and_load_both_ways() {
    check_recorder(
        PrettyJsonFileRecorder::<FullPrecisionSettings>::new(),
        "json",
    );
}

#[test]
fn full_precision_files_keep_the_exact_weights() {
    let host = NdArrayDevice::Cpu;
    let model = initialised(Mlp::<NdAutodiff>::new(4, 2, &host));
    let expected = float_params(&model);
    let dir = scratch_dir("exact");
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    DataParallel::new(model, nd_devices(3))
        .expect("valid devices")
        .save_file(dir.join("model"), &recorder)
        .expect("saves");
    let loaded = Mlp::<NdAutodiff>::new(4, 2, &host)
        .load_file(dir.join("model"), &recorder, &host)
        .expect("loads");
    assert_eq!(float_params(&loaded), expected);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn display_shows_the_devices_and_the_template() {
    let host = NdArrayDevice::Cpu;
    let dp = DataParallel::new(Mlp::<NdAutodiff>::new(4, 2, &host), nd_devices(2)).expect("valid");
    let text = dp.to_string();
    assert!(text.starts_with("DataParallel"), "{text}");
    assert!(text.contains("devices: [Cpu, Cpu]"), "{text}");
    assert!(text.contains("host: Cpu"), "{text}");
    assert!(text.contains("template: \"Mlp\" {"), "{text}");
    assert!(text.contains("Linear {d_input: 4, d_output: 16"), "{text}");
    // 4·16 + 16 weights and biases, then 16·2 + 2.
    assert!(text.trim_end().ends_with("params: 114\n}"), "{text}");
}
