use burn::tensor::backend::Backend;
use burn_data_parallel::Gather;

#[derive(Gather)]
union Output<B: Backend> {
    count: u32,
    marker: core::mem::ManuallyDrop<core::marker::PhantomData<B>>,
}

fn main() {}
