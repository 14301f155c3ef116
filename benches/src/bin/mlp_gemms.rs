//! Times the matrix multiplies of one MLP 784-256-128-10 training step, one shape at a time.
//!
//! A step at batch 64 runs 8 products through `dendrite::tensor::matmul_into`: 3 in the forward
//! pass and 5 in the backward pass (the first layer's input gradient is skipped because the
//! input needs none). Each shape runs in a tight loop with warm caches, so the times are a
//! lower bound for the same products inside a step. There, other work runs between the
//! products, and idle rayon threads may have to be woken for each one.

use std::process::ExitCode;
use std::time::Instant;

use dendrite::tensor::{Transpose, matmul_into, set_gemm_threads};

const USAGE: &str = "\
Usage: mlp-gemms [OPTIONS]

Times the 8 matrix multiplies of one MLP 784-256-128-10 training step and prints one line per
shape with the mean time per call, then the total.

Options:
  --threads N      threads for rayon and the matrix multiply (default 1)
  --batch B        rows per mini-batch (default 64)
  --iterations I   timed calls per shape, after I/10 untimed ones (default 2000)
  -h, --help       print this help";

/// One product `dst = lhs · rhs` (or `dst += lhs · rhs`) of logical shape `m x k` by `k x n`.
struct Product {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    lhs_t: Transpose,
    rhs_t: Transpose,
    accumulate: bool,
}

/// Lists the products of one training step in the order the step runs them. Dense weights are
/// stored as `[outputs, inputs]`, as in `dendrite::nn::Sequential`.
fn step_products(batch: usize) -> Vec<Product> {
    use Transpose::{No, Yes};

    let product = |name, m, k, n, lhs_t, rhs_t, accumulate| Product {
        name,
        m,
        k,
        n,
        lhs_t,
        rhs_t,
        accumulate,
    };
    vec![
        // Forward: x · Wᵀ added to the bias rows.
        product("forward 1: x · W1ᵀ", batch, 784, 256, No, Yes, true),
        product("forward 2: h1 · W2ᵀ", batch, 256, 128, No, Yes, true),
        product("forward 3: h2 · W3ᵀ", batch, 128, 10, No, Yes, true),
        // Backward: dX = G · W and dW = Gᵀ · X for each layer, last layer first.
        product("backward 3: G · W3", batch, 10, 128, No, No, false),
        product("backward 3: Gᵀ · h2", 10, batch, 128, Yes, No, false),
        product("backward 2: G · W2", batch, 128, 256, No, No, false),
        product("backward 2: Gᵀ · h1", 128, batch, 256, Yes, No, false),
        product("backward 1: Gᵀ · x", 256, batch, 784, Yes, No, false),
    ]
}

/// Returns the mean time of one call in microseconds.
fn time_product(product: &Product, iterations: usize) -> f64 {
    let Product { m, k, n, .. } = *product;
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.01).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 * 0.01).collect();
    let mut dst = vec![0.0f32; m * n];
    let mut call = || {
        matmul_into(
            &mut dst,
            &lhs,
            product.lhs_t,
            &rhs,
            product.rhs_t,
            m,
            k,
            n,
            product.accumulate,
        );
    };

    for _ in 0..iterations / 10 {
        call();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        call();
    }
    start.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

fn parse_positive(flag: &str, value: Option<String>) -> Result<usize, String> {
    let value = value.ok_or_else(|| format!("option {flag} is missing its value"))?;
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid {flag} value {value:?}: expected an integer of at least 1"
        )),
    }
}

fn main() -> ExitCode {
    let (mut threads, mut batch, mut iterations) = (1, 64, 2000);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let parsed = match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--threads" => parse_positive(&flag, args.next()).map(|n| threads = n),
            "--batch" => parse_positive(&flag, args.next()).map(|n| batch = n),
            "--iterations" => parse_positive(&flag, args.next()).map(|n| iterations = n),
            _ => Err(format!("unknown option {flag}")),
        };
        if let Err(message) = parsed {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }

    if let Err(error) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        eprintln!("error: failed to start {threads} rayon threads: {error}");
        return ExitCode::FAILURE;
    }
    set_gemm_threads(threads);

    let mut total_us = 0.0;
    for product in step_products(batch) {
        let us = time_product(&product, iterations);
        let gflops = 2.0 * (product.m * product.k * product.n) as f64 / us / 1e3;
        println!(
            "{:22} m={:4} k={:4} n={:4}  {us:8.1} us  {gflops:6.1} GFLOP/s",
            product.name, product.m, product.k, product.n
        );
        total_us += us;
    }
    println!("total of the step's matrix multiplies: {total_us:.1} us at {threads} thread(s)");
    ExitCode::SUCCESS
}
