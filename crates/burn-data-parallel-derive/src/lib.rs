//! Implementation detail of [`burn-data-parallel`](https://docs.rs/burn-data-parallel): the
//! `Scatter` and `Gather` derives. Use them through `burn_data_parallel::{Scatter, Gather}`.
//!
//! The pipeline follows thiserror's: `ast` reads the input, `attr` the field attributes,
//! `valid` checks what the attributes cannot, `expand` writes the impl, and `fallback` writes a
//! stand-in impl next to the error when the input is wrong, so that the user sees one error
//! rather than a cascade at every use of the type.

mod ast;
mod attr;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `burn_data_parallel::Scatter` for a struct whose fields can be split along the
/// batch dimension.
///
/// Field attributes: `#[scatter(broadcast)]` gives every replica a clone of the field (values
/// without a batch dimension; the type must be `Clone`), `#[scatter(skip)]` gives every
/// replica `Default::default()`, and `#[scatter(normaliser)]` splits the field as usual and
/// declares it what the loss averages over (a mask, per-row weights: the sum of a shard's rows
/// is its count; the type must implement `burn_data_parallel::Normaliser`). Every other field
/// must implement `Scatter`.
#[proc_macro_derive(Scatter, attributes(scatter))]
pub fn derive_scatter(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input, attr::Trait::Scatter).into()
}

/// Derives `burn_data_parallel::Gather` for a struct whose fields can be merged from the
/// replicas' outputs.
///
/// Field attributes: `#[gather(loss)]` merges a float tensor as the inner model reduced its
/// loss (`GatherContext::loss`: the shard-weighted mean, weighted by a declared normaliser's
/// counts when the input has one, or the sum), `#[gather(mean)]` as the shard-weighted mean,
/// `#[gather(sum)]` as the sum, `#[gather(first)]` keeps the first replica's value (values the
/// same on every replica), `#[gather(skip)]` gives `Default::default()`. Every other field
/// must implement `Gather`.
#[proc_macro_derive(Gather, attributes(gather))]
pub fn derive_gather(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input, attr::Trait::Gather).into()
}
