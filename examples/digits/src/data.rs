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

/// Reads `digits.csv.gz`: one image per row, 64 pixels then the label.
pub fn load(path: &Path) -> Result<Vec<DigitItem>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot decompress {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(row, line)| {
            parse_row(line).map_err(|e| format!("{}:{}: {e}", path.display(), row + 1))
        })
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

/// Splits `items` into a training and a held-out test set: a fixed pseudo-random permutation,
/// then the first `1 - test_share` for training.
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
