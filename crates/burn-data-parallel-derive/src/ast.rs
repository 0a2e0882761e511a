//! The derive input, read into what the expansion needs.

use proc_macro2::Span;
use syn::{Data, DeriveInput, Fields, Generics, Ident, Member, Type};

use crate::attr::{self, Rule, Trait};

/// A struct the derive applies to.
pub(crate) struct Struct<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) fields: Vec<Field<'a>>,
}

/// One field and what its attribute asks for.
pub(crate) struct Field<'a> {
    pub(crate) member: Member,
    pub(crate) ty: &'a Type,
    pub(crate) rule: Rule,
}

impl<'a> Struct<'a> {
    /// Reads `input`; enums and unions are errors.
    pub(crate) fn from_syn(input: &'a DeriveInput, derive: Trait) -> syn::Result<Self> {
        let fields = match &input.data {
            Data::Struct(data) => &data.fields,
            Data::Enum(data) => {
                return Err(syn::Error::new_spanned(
                    data.enum_token,
                    format!(
                        "{} cannot be derived for enums: the replicas' parts would have to agree \
                         on a variant; derive it for a struct, or implement `{}` by hand",
                        derive.name(),
                        derive.name()
                    ),
                ));
            }
            Data::Union(data) => {
                return Err(syn::Error::new_spanned(
                    data.union_token,
                    format!(
                        "{} cannot be derived for unions: derive it for a struct",
                        derive.name()
                    ),
                ));
            }
        };
        let fields = match fields {
            Fields::Named(named) => named.named.iter().collect(),
            Fields::Unnamed(unnamed) => unnamed.unnamed.iter().collect(),
            Fields::Unit => Vec::new(),
        };
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(index, field)| {
                let member = match &field.ident {
                    Some(ident) => Member::Named(ident.clone()),
                    None => Member::Unnamed(syn::Index {
                        index: index as u32,
                        span: Span::call_site(),
                    }),
                };
                Ok(Field {
                    member,
                    ty: &field.ty,
                    rule: attr::rule(&field.attrs, derive)?,
                })
            })
            .collect::<syn::Result<_>>()?;
        Ok(Struct {
            ident: &input.ident,
            generics: &input.generics,
            fields,
        })
    }
}
