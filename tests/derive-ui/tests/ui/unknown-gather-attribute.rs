use burn::tensor::{Tensor, backend::Backend};
use burn_data_parallel::Gather;

#[derive(Gather)]
struct Output<B: Backend> {
    logits: Tensor<B, 2>,
    #[gather(average)]
    loss: Tensor<B, 1>,
}

fn main() {}
