//! The handwritten digits data: loading, a fixed train/test split, and batching.

use std::io::Read;
use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_data_parallel::Scatter;

/// Side of the square images.
pub const IMAGE_SIZE: usize = 8;
/// Number of classes.
pub const CLASSES: usize = 10;

/// One image with its label.
#[derive(Debug, Clone)]
pub struct DigitItem {
    /// Pixels, row by row, scaled from `0..=16` to `0.0..=1.0`.
    pub pixels: [f32; IMAGE_SIZE * IMAGE_SIZE],
    /// The digit shown, `0..=9`.
    pub label: u8,
}

/// The UCI handwritten digits (`data/digits.csv.gz`, see `data/README.md`), inside the program
/// so that it runs from any directory, on any machine.
pub const EMBEDDED: &[u8] = include_bytes!("../data/digits.csv.gz");

/// The digits inside the program ([`EMBEDDED`]).
pub fn load_embedded() -> Result<Vec<DigitItem>, String> {
    parse(EMBEDDED, "the digits inside the program")
}

/// Reads a `digits.csv.gz` file: one image per row, 64 pixels then the label.
pub fn load(path: &Path) -> Result<Vec<DigitItem>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    parse(&bytes, &path.display().to_string())
}

/// Parses gzip-compressed CSV rows of 64 pixels (`0..=16`) and a label; `origin` names the
/// data in errors.
pub fn parse(gzipped: &[u8], origin: &str) -> Result<Vec<DigitItem>, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot decompress {origin}: {e}"))?;
    text.lines()
        .enumerate()
        .map(|(row, line)| parse_row(line).map_err(|e| format!("{origin}:{}: {e}", row + 1)))
        .collect()
}

fn parse_row(line: &str) -> Result<DigitItem, String> {
    let values: Vec<u8> = line
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<u8>()
                .map_err(|e| format!("bad value {v:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let (pixels, label) = match values.as_slice() {
        [pixels @ .., label] if pixels.len() == IMAGE_SIZE * IMAGE_SIZE => (pixels, *label),
        _ => return Err(format!("expected 65 values, found {}", values.len())),
    };
    if usize::from(label) >= CLASSES {
        return Err(format!("label {label} is not a digit"));
    }
    let mut item = DigitItem {
        pixels: [0.0; IMAGE_SIZE * IMAGE_SIZE],
        label,
    };
    for (out, &pixel) in item.pixels.iter_mut().zip(pixels) {
        *out = f32::from(pixel) / 16.0;
    }
    Ok(item)
}

/// Splits `items` into a training and a held-out test set: a fixed pseudo-random permutation
/// (the same for a seed on every machine), whose first `test_share` (rounded) is the test set
/// and the rest the training set.
pub fn split(
    mut items: Vec<DigitItem>,
    test_share: f64,
    seed: u64,
) -> (Vec<DigitItem>, Vec<DigitItem>) {
    // Fisher-Yates with a 64-bit linear congruential generator: the same split everywhere.
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
    let test = ((items.len() as f64) * test_share).round() as usize;
    let train = items.split_off(test);
    (train, items)
}

/// A dataset over items held in memory.
#[derive(Debug, Clone)]
pub struct DigitsDataset(pub Vec<DigitItem>);

impl Dataset<DigitItem> for DigitsDataset {
    fn get(&self, index: usize) -> Option<DigitItem> {
        self.0.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A batch of images `[n, 1, 8, 8]` and their labels `[n]`. `DataParallel` splits it through
/// the derived `Scatter`.
#[derive(Debug, Clone, Scatter)]
pub struct DigitsBatch<B: Backend> {
    /// The images.
    pub images: Tensor<B, 4>,
    /// The labels.
    pub targets: Tensor<B, 1, Int>,
}

/// Stacks items into a [`DigitsBatch`].
#[derive(Debug, Clone, Default)]
pub struct DigitsBatcher;

impl<B: Backend> Batcher<B, DigitItem, DigitsBatch<B>> for DigitsBatcher {
    fn batch(&self, items: Vec<DigitItem>, device: &B::Device) -> DigitsBatch<B> {
        // Each batch is progress, as the job's watchdog counts it.
        crate::watchdog::beat();
        let n = items.len();
        let pixels: Vec<f32> = items.iter().flat_map(|item| item.pixels).collect();
        let labels: Vec<i64> = items.iter().map(|item| i64::from(item.label)).collect();
        DigitsBatch {
            images: Tensor::from_data(
                TensorData::new(pixels, [n, 1, IMAGE_SIZE, IMAGE_SIZE]),
                device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<DigitItem> {
        (0..n)
            .map(|i| DigitItem {
                pixels: [i as f32; IMAGE_SIZE * IMAGE_SIZE],
                label: (i % CLASSES) as u8,
            })
            .collect()
    }

    fn ids(items: &[DigitItem]) -> Vec<usize> {
        items.iter().map(|item| item.pixels[0] as usize).collect()
    }

    #[test]
    fn the_embedded_data_is_the_whole_uci_set() {
        let items = load_embedded().expect("the embedded copy parses");
        assert_eq!(items.len(), 1797);
        let mut per_class = [0usize; CLASSES];
        for item in &items {
            per_class[usize::from(item.label)] += 1;
            assert!(item.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        }
        // The UCI test set holds between 174 and 183 images of each digit.
        assert!(
            per_class.iter().all(|&n| (174..=183).contains(&n)),
            "{per_class:?}"
        );
    }

    #[test]
    fn a_file_reads_like_the_embedded_copy_and_errors_name_their_origin() {
        let dir = std::env::temp_dir().join(format!("digits-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let path = dir.join("digits.csv.gz");
        std::fs::write(&path, EMBEDDED).expect("write a copy");
        let from_file = load(&path).expect("the copy parses");
        assert_eq!(ids(&from_file), ids(&load_embedded().expect("embedded")));
        let missing = load(&dir.join("missing.csv.gz")).expect_err("no such file");
        assert!(missing.contains("missing.csv.gz"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("clean up");

        assert!(
            parse(b"not gzip", "here")
                .expect_err("not gzip")
                .contains("here")
        );
        assert!(
            parse_row("1,2,3")
                .expect_err("too short")
                .contains("expected 65")
        );
        let eleven = format!("{}10", "0,".repeat(64));
        assert!(
            parse_row(&eleven)
                .expect_err("label 10")
                .contains("not a digit")
        );
    }

    #[test]
    fn the_split_holds_out_the_first_share_of_a_seeded_permutation() {
        let (train, test) = split(numbered(100), 0.2, 42);
        assert_eq!((train.len(), test.len()), (80, 20));
        let mut all: Vec<usize> = ids(&train).into_iter().chain(ids(&test)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "every item exactly once");

        // The same seed gives the same split; another seed another one.
        let (again_train, again_test) = split(numbered(100), 0.2, 42);
        assert_eq!(
            (ids(&again_train), ids(&again_test)),
            (ids(&train), ids(&test))
        );
        let (_, other_test) = split(numbered(100), 0.2, 43);
        assert_ne!(ids(&other_test), ids(&test));

        // The test set is the head of the permutation: a larger share extends it.
        let (_, larger_test) = split(numbered(100), 0.3, 42);
        assert_eq!(ids(&larger_test)[..20], ids(&test)[..]);
        // The permutation moves items: the test set is not simply the first rows.
        assert_ne!(ids(&test), (0..20).collect::<Vec<_>>());
    }
}
