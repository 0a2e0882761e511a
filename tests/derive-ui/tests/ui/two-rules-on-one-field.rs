use burn::tensor::{Tensor, backend::Backend};
use burn_data_parallel::Scatter;

#[derive(Scatter)]
struct Batch<B: Backend> {
    images: Tensor<B, 4>,
    #[scatter(broadcast, skip)]
    scale: f32,
}

fn main() {}
