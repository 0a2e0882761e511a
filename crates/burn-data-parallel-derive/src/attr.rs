//! Field attributes: `#[scatter(broadcast | normaliser | skip)]` and
//! `#[gather(loss | mean | sum | first | skip)]`.

use syn::{Attribute, Ident};

/// Which trait is being derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trait {
    Scatter,
    Gather,
}

impl Trait {
    /// The trait's name, as the user writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Trait::Scatter => "Scatter",
            Trait::Gather => "Gather",
        }
    }

    /// The name of the trait's field attribute.
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Trait::Scatter => "scatter",
            Trait::Gather => "gather",
        }
    }
}

/// What to do with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Split it (Scatter) or merge it (Gather) with its own implementation.
    Each,
    /// Scatter: clone it to every replica.
    Broadcast,
    /// Scatter: split it, and count what the loss averages over by summing its rows.
    Normaliser,
    /// Gather: merged as the inner model reduced its loss (`GatherContext::loss`).
    Loss,
    /// Gather: the shard-weighted mean.
    Mean,
    /// Gather: the sum.
    Sum,
    /// Gather: the first replica's value.
    First,
    /// Neither split nor merged: `Default::default()`.
    Skip,
}

/// The rule that `attrs` give a field, for the trait being derived. Attributes of the other
/// trait are left to its derive.
pub(crate) fn rule(attrs: &[Attribute], derive: Trait) -> syn::Result<Rule> {
    let mut found: Option<(Rule, Ident)> = None;
    for attr in attrs {
        if !attr.path().is_ident(derive.attribute()) {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            let ident = meta
                .path
                .get_ident()
                .cloned()
                .ok_or_else(|| meta.error(expected(derive)))?;
            let rule = parse_rule(&ident, derive).ok_or_else(|| {
                syn::Error::new_spanned(
                    &ident,
                    format!("unknown `{}` attribute `{ident}`: {}", derive.attribute(), expected(derive)),
                )
            })?;
            if let Some((_, first)) = &found {
                return Err(syn::Error::new_spanned(
                    &ident,
                    format!(
                        "`{ident}` conflicts with `{first}` given before: a field takes one `{}` attribute",
                        derive.attribute()
                    ),
                ));
            }
            found = Some((rule, ident));
            Ok(())
        })?;
    }
    Ok(found.map_or(Rule::Each, |(rule, _)| rule))
}

fn parse_rule(ident: &Ident, derive: Trait) -> Option<Rule> {
    let rule = match (derive, ident.to_string().as_str()) {
        (Trait::Scatter, "broadcast") => Rule::Broadcast,
        (Trait::Scatter, "normaliser") => Rule::Normaliser,
        (Trait::Gather, "loss") => Rule::Loss,
        (Trait::Gather, "mean") => Rule::Mean,
        (Trait::Gather, "sum") => Rule::Sum,
        (Trait::Gather, "first") => Rule::First,
        (_, "skip") => Rule::Skip,
        _ => return None,
    };
    Some(rule)
}

fn expected(derive: Trait) -> &'static str {
    match derive {
        Trait::Scatter => "expected `broadcast`, `normaliser` or `skip`",
        Trait::Gather => "expected `loss`, `mean`, `sum`, `first` or `skip`",
    }
}
