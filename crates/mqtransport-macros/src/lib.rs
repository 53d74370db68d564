//! `#[derive(Message)]` for mqtransport. Use it through the facade: `mqtransport::Message`.
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize, mqtransport::Message)]
//! #[message(name = "orders.created")]
//! struct OrderCreated { id: u64 }
//! ```
//!
//! Attributes, all optional, in one or more `#[message(...)]`:
//!
//! | attribute | meaning | default |
//! |---|---|---|
//! | `name = "orders.created"` | the message name (AMQP `type` property), the dispatch key | the type's name in snake_case: `OrderCreated` → `order_created` |
//! | `codec = "json"` / `"msgpack"` / `"text"` / `"bytes"` | how the body is encoded | `json` |
//! | `validate` / `validate = false` | run `garde::Validate` on consume (and produce, per the producer) | on when the type or a field carries a `#[garde(...)]` attribute |
//! | `crate = "path"` | where the `mqtransport` crate is | `::mqtransport` |

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::{Data, DeriveInput, LitBool, LitStr, Path, parse_macro_input};

/// Implements `mqtransport::Message` for a serde type. See the crate documentation for the
/// `#[message(...)]` attributes.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Attrs {
    name: Option<LitStr>,
    codec: Option<(String, Span)>,
    validate: Option<bool>,
    krate: Option<Path>,
}

fn parse_attrs(input: &DeriveInput) -> syn::Result<Attrs> {
    let mut attrs = Attrs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                check_name(&lit)?;
                set(&mut attrs.name, lit, &meta, "name")
            } else if meta.path.is_ident("codec") {
                let lit: LitStr = meta.value()?.parse()?;
                let codec = lit.value();
                if !matches!(codec.as_str(), "json" | "msgpack" | "text" | "bytes") {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("unknown codec \"{codec}\": expected \"json\", \"msgpack\", \"text\" or \"bytes\""),
                    ));
                }
                set(&mut attrs.codec, (codec, lit.span()), &meta, "codec")
            } else if meta.path.is_ident("validate") {
                let on = if meta.input.peek(syn::Token![=]) {
                    let lit: LitBool = meta.value()?.parse()?;
                    lit.value
                } else {
                    true
                };
                set(&mut attrs.validate, on, &meta, "validate")
            } else if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                let path: Path = lit.parse()?;
                set(&mut attrs.krate, path, &meta, "crate")
            } else {
                Err(meta.error("unknown message attribute: expected `name`, `codec`, `validate` or `crate`"))
            }
        })?;
    }
    Ok(attrs)
}

fn set<T>(slot: &mut Option<T>, value: T, meta: &syn::meta::ParseNestedMeta<'_>, what: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format!("`{what}` is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// A message name travels as the AMQP `type` property (a short string): 1 to 255 bytes, and
/// printable, so that it reads well in logs and broker tools.
fn check_name(lit: &LitStr) -> syn::Result<()> {
    let name = lit.value();
    if name.is_empty() || name.len() > 255 {
        return Err(syn::Error::new(
            lit.span(),
            "a message name must be 1 to 255 bytes long",
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(syn::Error::new(
            lit.span(),
            format!("a message name cannot contain {c:?}"),
        ));
    }
    Ok(())
}

/// Whether the type or one of its fields or variants carries a `#[garde(...)]` attribute.
fn has_garde(input: &DeriveInput) -> bool {
    let garde = |attrs: &[syn::Attribute]| attrs.iter().any(|a| a.path().is_ident("garde"));
    if garde(&input.attrs) {
        return true;
    }
    match &input.data {
        Data::Struct(s) => s.fields.iter().any(|f| garde(&f.attrs)),
        Data::Enum(e) => e
            .variants
            .iter()
            .any(|v| garde(&v.attrs) || v.fields.iter().any(|f| garde(&f.attrs))),
        Data::Union(u) => u.fields.named.iter().any(|f| garde(&f.attrs)),
    }
}

/// The default message name: the type's name in snake_case (`OrderCreated` → `order_created`,
/// `HTTPRequest` → `http_request`).
fn snake_case(ident: &str) -> String {
    let chars: Vec<char> = ident.trim_start_matches("r#").chars().collect();
    let mut out = String::with_capacity(chars.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) => {
                    p.is_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
                }
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if let Data::Union(u) = &input.data {
        return Err(syn::Error::new(
            u.union_token.span,
            "Message cannot be derived for a union: use a struct or an enum",
        ));
    }
    let attrs = parse_attrs(input)?;
    let krate = attrs.krate.unwrap_or_else(|| syn::parse_quote!(::mqtransport));
    let ident = &input.ident;
    let name = attrs
        .name
        .map_or_else(|| snake_case(&ident.to_string()), |lit| lit.value());
    let codec = match attrs.codec.as_ref().map(|(c, _)| c.as_str()) {
        Some("msgpack") => quote!(#krate::Codec::MsgPack),
        Some("text") => quote!(#krate::Codec::Text),
        Some("bytes") => quote!(#krate::Codec::Bytes),
        _ => quote!(#krate::Codec::Json),
    };
    let validate = if attrs.validate.unwrap_or_else(|| has_garde(input)) {
        quote! {
            fn validate(&self) -> ::core::result::Result<(), #krate::Invalid> {
                #krate::__private::garde_validate(self)
            }
        }
    } else {
        quote!()
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics #krate::Message for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const CODEC: #krate::Codec = #codec;
            #validate

            fn schema() -> ::core::option::Option<#krate::__private::serde_json::Value> {
                // The schema when the type derives `schemars::JsonSchema` (and the `asyncapi`
                // feature is on), by autoref: the probe's `&`-impl needs the bound, the
                // by-value fallback does not.
                #[allow(unused_imports)]
                use #krate::__private::{SchemaFallback as _, SchemaOf as _};
                (&&#krate::__private::SchemaProbe::<Self>::NEW).schema()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn default_names_are_snake_case() {
        assert_eq!(snake_case("OrderCreated"), "order_created");
        assert_eq!(snake_case("HTTPRequest"), "http_request");
        assert_eq!(snake_case("Rand"), "rand");
        assert_eq!(snake_case("V2Event"), "v2_event");
        assert_eq!(snake_case("already_snake"), "already_snake");
        assert_eq!(snake_case("ParseJSONBody"), "parse_json_body");
    }
}
