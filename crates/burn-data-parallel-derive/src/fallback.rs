//! The impl written next to a compile error, so that the error is the only one: uses of the
//! type elsewhere still find the trait implemented.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::attr::Trait;
use crate::valid::backend_param;

/// `error` as a compile error, plus a stand-in impl when the input names a backend.
pub(crate) fn expand(input: &DeriveInput, derive: Trait, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    let backend = backend_param(&input.generics);
    let (Some(backend), syn::Data::Struct(_)) = (backend, &input.data) else {
        return error;
    };
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let private = quote!(::burn_data_parallel::__private);
    let body = match derive {
        Trait::Scatter => quote! {
            fn batch_sizes(&self, _: &mut #private::Vec<usize>) {
                ::core::unreachable!()
            }
            fn shard(
                &self,
                _: #private::Range<usize>,
                _: &::burn_data_parallel::ScatterContext<'_, #backend>,
            ) -> Self {
                ::core::unreachable!()
            }
        },
        Trait::Gather => quote! {
            fn gather(
                _: #private::Vec<Self>,
                _: &::burn_data_parallel::GatherContext<'_, #backend>,
            ) -> ::burn_data_parallel::Result<Self> {
                ::core::unreachable!()
            }
        },
    };
    let name = syn::Ident::new(derive.name(), proc_macro2::Span::call_site());
    quote! {
        #error
        impl #impl_generics ::burn_data_parallel::#name<#backend> for #ident #ty_generics #where_clause {
            #body
        }
    }
}
