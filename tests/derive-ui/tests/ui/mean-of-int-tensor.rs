use burn::tensor::{Int, Tensor, backend::Backend};
use burn_data_parallel::Gather;

#[derive(Gather)]
struct Output<B: Backend> {
    logits: Tensor<B, 2>,
    #[gather(mean)]
    correct: Tensor<B, 1, Int>,
}

fn main() {}
