//! Handlers: plain `async fn`s whose arguments are extractors ([`Handler`]).

use std::future::Future;
use std::sync::Arc;

use mqtransport_core::BoxFuture;

use crate::delivery::Incoming;
use crate::extract::FromDelivery;
use crate::outcome::{IntoOutcome, Outcome};

/// An async function that handles deliveries: every argument is an extractor
/// ([`FromDelivery`]), in any order, and the return value converts into an [`Outcome`]
/// ([`IntoOutcome`]). Implemented for functions of up to 16 arguments; you do not implement it
/// yourself.
///
/// ```
/// use mqtransport::{DeliveryInfo, HandlerError, Message, State};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.created")]
/// struct OrderCreated {
///     id: u64,
/// }
///
/// #[derive(Clone)]
/// struct Db;
///
/// // The message argument names the message type this handler serves.
/// async fn on_created(order: OrderCreated, State(_db): State<Db>, info: DeliveryInfo) -> Result<(), HandlerError> {
///     println!("order {} (attempt {})", order.id, info.attempt());
///     Ok(())
/// }
/// # let _ = on_created;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler",
    label = "not a handler",
    note = "a handler is an `async fn` whose arguments are extractors (a `#[derive(Message)]` type, `State<T>`, `Headers`, `DeliveryInfo`, `Publisher`, `Envelope`, …) and which returns `()`, an `Outcome`, or a `Result<_, E>` with `E: Into<Box<dyn Error + Send + Sync>>`",
    note = "a `State<T>` argument needs `T: FromRef<S>` for the app's state `S`"
)]
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Extracts the arguments and runs the function.
    fn call(self, req: Incoming, state: S) -> BoxFuture<'static, Outcome>;

    /// The message name the arguments decode, if any; an error if they decode two.
    #[doc(hidden)]
    fn message() -> Result<Option<&'static str>, String>;

    /// What the AsyncAPI document says of the message the arguments decode.
    #[doc(hidden)]
    fn message_doc() -> Option<crate::MessageDoc> {
        None
    }
}

/// The one message name among a handler's arguments.
fn one_message(names: &[Option<&'static str>]) -> Result<Option<&'static str>, String> {
    let mut found: Option<&'static str> = None;
    for name in names.iter().flatten() {
        match found {
            Some(f) if f != *name => {
                return Err(format!(
                    "the handler takes two messages, '{f}' and '{name}'; a delivery is one message"
                ));
            }
            _ => found = Some(name),
        }
    }
    Ok(found)
}

/// The document of the message among a handler's arguments.
fn first_doc(docs: &[Option<crate::MessageDoc>]) -> Option<crate::MessageDoc> {
    docs.iter().flatten().next().copied()
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, S, O, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: FnOnce($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = O> + Send + 'static,
            O: IntoOutcome,
            S: Clone + Send + Sync + 'static,
            $($ty: FromDelivery<S> + Send + 'static,)*
        {
            fn call(self, req: Incoming, state: S) -> BoxFuture<'static, Outcome> {
                Box::pin(async move {
                    $(
                        let $ty = match $ty::from_delivery(&req, &state).await {
                            Ok(value) => value,
                            Err(rejection) => return rejection.into_outcome(),
                        };
                    )*
                    req.parts().mark_handler_started();
                    drop(req);
                    self($($ty,)*).await.into_outcome()
                })
            }

            fn message() -> Result<Option<&'static str>, String> {
                one_message(&[$($ty::MESSAGE,)*])
            }

            fn message_doc() -> Option<crate::MessageDoc> {
                first_doc(&[$($ty::MESSAGE_DOC,)*])
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15, T16);

/// A handler with its argument types erased, as the dispatch table holds it.
pub(crate) trait ErasedHandler<S>: Send + Sync + 'static {
    fn call(&self, req: Incoming, state: S) -> BoxFuture<'static, Outcome>;
}

struct Erased<H, T> {
    handler: H,
    _args: std::marker::PhantomData<fn() -> T>,
}

impl<H, T, S> ErasedHandler<S> for Erased<H, T>
where
    H: Handler<T, S>,
    T: 'static,
    S: 'static,
{
    fn call(&self, req: Incoming, state: S) -> BoxFuture<'static, Outcome> {
        self.handler.clone().call(req, state)
    }
}

/// A type-erased handler.
pub(crate) type BoxedHandler<S> = Arc<dyn ErasedHandler<S>>;

pub(crate) fn erase<H, T, S>(handler: H) -> BoxedHandler<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: 'static,
{
    Arc::new(Erased {
        handler,
        _args: std::marker::PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::one_message;

    #[test]
    fn a_handler_serves_at_most_one_message() {
        assert_eq!(one_message(&[None, None]), Ok(None));
        assert_eq!(one_message(&[None, Some("a"), Some("a")]), Ok(Some("a")));
        let e = one_message(&[Some("a"), None, Some("b")]).unwrap_err();
        assert!(e.contains("'a' and 'b'"), "{e}");
    }
}
