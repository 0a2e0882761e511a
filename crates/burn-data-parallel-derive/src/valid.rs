//! Checks the attributes cannot express: which type parameter is the backend.

use proc_macro2::TokenTree;
use quote::ToTokens;
use syn::{GenericParam, Generics, Ident, Type, TypeParamBound};

use crate::ast::Struct;
use crate::attr::Trait;

/// The backend type parameter: the one bounded by `Backend` (or `AutodiffBackend`), else the
/// one named `B`, as in Burn's own derives.
pub(crate) fn backend<'a>(input: &'a Struct<'_>, derive: Trait) -> syn::Result<&'a Ident> {
    backend_param(input.generics).ok_or_else(|| {
        syn::Error::new_spanned(
            input.ident,
            format!(
                "{} needs the backend as a type parameter: add `B: Backend` to `{}`'s \
                 generics (the tensors it holds are `Tensor<B, D>`)",
                input.derive_name(derive),
                input.ident
            ),
        )
    })
}

/// The backend type parameter of `generics`, if there is one: the one rule both the derive and
/// its fallback use.
pub(crate) fn backend_param(generics: &Generics) -> Option<&Ident> {
    let params = || {
        generics.params.iter().filter_map(|param| match param {
            GenericParam::Type(param) => Some(param),
            _ => None,
        })
    };
    let bounded = params().find(|param| {
        param.bounds.iter().any(|bound| match bound {
            TypeParamBound::Trait(bound) => bound.path.segments.last().is_some_and(|segment| {
                segment.ident == "Backend" || segment.ident == "AutodiffBackend"
            }),
            _ => false,
        })
    });
    bounded
        .or_else(|| params().find(|param| param.ident == "B"))
        .map(|param| &param.ident)
}

/// Whether `ty` mentions a type parameter of `generics` other than `backend`: such field types
/// need a bound on the impl, the others are checked where the field is used.
pub(crate) fn mentions_other_parameter(ty: &Type, generics: &Generics, backend: &Ident) -> bool {
    let others: Vec<&Ident> = generics
        .type_params()
        .map(|param| &param.ident)
        .filter(|ident| *ident != backend)
        .collect();
    !others.is_empty() && mentions(ty.to_token_stream(), &others)
}

fn mentions(tokens: proc_macro2::TokenStream, idents: &[&Ident]) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => idents.iter().any(|other| **other == ident),
        TokenTree::Group(group) => mentions(group.stream(), idents),
        _ => false,
    })
}

impl Struct<'_> {
    fn derive_name(&self, derive: Trait) -> String {
        format!("#[derive({})]", derive.name())
    }
}
