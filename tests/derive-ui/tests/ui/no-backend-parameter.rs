use burn_data_parallel::Scatter;

#[derive(Scatter)]
struct Batch {
    pixels: Vec<f32>,
}

fn main() {}
