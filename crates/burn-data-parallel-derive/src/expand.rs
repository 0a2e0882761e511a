//! Writes the `Scatter` and `Gather` impls.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, WherePredicate};

use crate::ast::{Field, Struct};
use crate::attr::{Rule, Trait};
use crate::{fallback, valid};

/// The impl of `derive` for `input`, or its error with a stand-in impl.
pub(crate) fn derive(input: &DeriveInput, derive: Trait) -> TokenStream {
    try_expand(input, derive).unwrap_or_else(|error| fallback::expand(input, derive, error))
}

fn try_expand(input: &DeriveInput, derive: Trait) -> syn::Result<TokenStream> {
    let input = Struct::from_syn(input, derive)?;
    let backend = valid::backend(&input, derive)?;
    Ok(match derive {
        Trait::Scatter => scatter(&input, backend),
        Trait::Gather => gather(&input, backend),
    })
}

fn krate() -> TokenStream {
    quote!(::burn_data_parallel)
}

fn private() -> TokenStream {
    quote!(::burn_data_parallel::__private)
}

/// `ty: bound` for field types that mention a type parameter other than the backend; other
/// field types are checked where they are used, so that errors point at the field.
fn bound(
    input: &Struct<'_>,
    backend: &Ident,
    field: &Field<'_>,
    bound: TokenStream,
) -> Option<WherePredicate> {
    let ty = field.ty;
    valid::mentions_other_parameter(ty, input.generics, backend)
        .then(|| syn::parse_quote_spanned!(ty.span()=> #ty: #bound))
}

/// The impl header: generics, the struct, and the where clause with `bounds` added.
fn header(
    input: &Struct<'_>,
    bounds: Vec<WherePredicate>,
) -> (TokenStream, TokenStream, TokenStream) {
    let mut generics = input.generics.clone();
    generics.make_where_clause().predicates.extend(bounds);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    (
        quote!(#impl_generics),
        quote!(#ty_generics),
        quote!(#where_clause),
    )
}

fn scatter(input: &Struct<'_>, backend: &Ident) -> TokenStream {
    let (krate, private) = (krate(), private());
    let trait_ = quote!(#krate::Scatter<#backend>);
    let mut bounds = Vec::new();
    let mut sizes = Vec::new();
    let mut shard = Vec::new();
    let mut floats = Vec::new();
    let mut normalisers = Vec::new();
    for field in &input.fields {
        let (member, ty) = (&field.member, field.ty);
        let span = ty.span();
        match field.rule {
            Rule::Broadcast => {
                bounds.extend(bound(input, backend, field, quote!(::core::clone::Clone)));
                shard.push(
                    quote_spanned!(span=> #member: ::core::clone::Clone::clone(&self.#member)),
                );
            }
            Rule::Skip => {
                bounds.extend(bound(
                    input,
                    backend,
                    field,
                    quote!(::core::default::Default),
                ));
                shard.push(quote_spanned!(span=> #member: ::core::default::Default::default()));
            }
            _ => {
                bounds.extend(bound(input, backend, field, trait_.clone()));
                sizes.push(
                    quote_spanned!(span=> <#ty as #trait_>::batch_sizes(&self.#member, sizes);),
                );
                shard.push(quote_spanned!(span=>
                    #member: <#ty as #trait_>::shard(&self.#member, ::core::clone::Clone::clone(&rows), context)
                ));
                floats.push(
                    quote_spanned!(span=> <#ty as #trait_>::visit_floats(&self.#member, visit);),
                );
                normalisers.push(if field.rule == Rule::Normaliser {
                    bounds.extend(bound(
                        input,
                        backend,
                        field,
                        quote!(::burn_data_parallel::Normaliser<#backend>),
                    ));
                    quote_spanned!(span=> let total = #private::add_normaliser(
                        total,
                        ::core::option::Option::Some(
                            <#ty as ::burn_data_parallel::Normaliser<#backend>>::total(&self.#member, ::core::clone::Clone::clone(&rows)),
                        ),
                    );)
                } else {
                    quote_spanned!(span=> let total = #private::add_normaliser(
                        total,
                        <#ty as #trait_>::normaliser(&self.#member, ::core::clone::Clone::clone(&rows)),
                    );)
                });
            }
        }
    }
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = header(input, bounds);
    quote! {
        #[automatically_derived]
        impl #impl_generics #trait_ for #ident #ty_generics #where_clause {
            #[allow(unused_variables)]
            fn batch_sizes(&self, sizes: &mut #private::Vec<usize>) {
                #(#sizes)*
            }

            #[allow(unused_variables)]
            fn shard(
                &self,
                rows: #private::Range<usize>,
                context: &#krate::ScatterContext<'_, #backend>,
            ) -> Self {
                Self { #(#shard,)* }
            }

            #[allow(unused_variables)]
            fn visit_floats(&self, visit: &mut dyn FnMut(#private::Tensor<#backend, 1>)) {
                #(#floats)*
            }

            #[allow(unused_variables)]
            fn normaliser(&self, rows: #private::Range<usize>) -> ::core::option::Option<f64> {
                let total = ::core::option::Option::None;
                #(#normalisers)*
                total
            }
        }
    }
}

fn gather(input: &Struct<'_>, backend: &Ident) -> TokenStream {
    let (krate, private) = (krate(), private());
    let trait_ = quote!(#krate::Gather<#backend>);
    let mut bounds = Vec::new();
    let mut columns = Vec::new();
    let mut bindings = Vec::new();
    let mut merged = Vec::new();
    for (index, field) in input.fields.iter().enumerate() {
        let (member, ty) = (&field.member, field.ty);
        let span = ty.span();
        if field.rule == Rule::Skip {
            bounds.extend(bound(
                input,
                backend,
                field,
                quote!(::core::default::Default),
            ));
            merged.push(quote_spanned!(span=> #member: ::core::default::Default::default()));
            continue;
        }
        let column = format_ident!("__column_{}", index, span = Span::call_site());
        let value = format_ident!("__value_{}", index, span = Span::call_site());
        columns.push(column.clone());
        bindings.push((member.clone(), value));
        let merge = match field.rule {
            // The paths are written out so that they carry the field's span: a field type
            // without the impl is then reported at the field.
            Rule::Mean => quote_spanned!(span=>
                <::burn_data_parallel::Mean<#ty> as ::burn_data_parallel::Gather<#backend>>::gather(
                    #column.into_iter().map(::burn_data_parallel::Mean).collect(),
                    context,
                )?.0
            ),
            Rule::Sum => quote_spanned!(span=>
                <::burn_data_parallel::Sum<#ty> as ::burn_data_parallel::Gather<#backend>>::gather(
                    #column.into_iter().map(::burn_data_parallel::Sum).collect(),
                    context,
                )?.0
            ),
            Rule::First => quote_spanned!(span=> #private::first(#column)?),
            Rule::Loss => quote_spanned!(span=> #private::loss(#column, context)?),
            _ => {
                bounds.extend(bound(input, backend, field, trait_.clone()));
                quote_spanned!(span=> <#ty as #trait_>::gather(#column, context)?)
            }
        };
        merged.push(quote!(#member: #merge));
    }
    let (members, values): (Vec<_>, Vec<_>) = bindings.into_iter().unzip();
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = header(input, bounds);
    quote! {
        #[automatically_derived]
        impl #impl_generics #trait_ for #ident #ty_generics #where_clause {
            #[allow(unused_variables)]
            fn gather(
                parts: #private::Vec<Self>,
                context: &#krate::GatherContext<'_, #backend>,
            ) -> #krate::Result<Self> {
                #(let mut #columns = #private::Vec::with_capacity(parts.len());)*
                for part in parts {
                    let Self { #(#members: #values,)* .. } = part;
                    #(#columns.push(#values);)*
                }
                ::core::result::Result::Ok(Self { #(#merged,)* })
            }
        }
    }
}
