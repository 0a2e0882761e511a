use burn::tensor::{Tensor, backend::Backend};
use burn_data_parallel::Scatter;

#[derive(Scatter)]
enum Batch<B: Backend> {
    Images(Tensor<B, 4>),
    Features(Tensor<B, 2>),
}

fn main() {}
