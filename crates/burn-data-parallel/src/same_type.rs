//! Moving a value between two generic types that a run-time check found to be one type.

use core::any::Any;

/// `value` as `U`, for a `T` that the caller checked (with `TypeId`) is `U`.
///
/// Burn lets this crate name some types only concretely (an `Autodiff<X, C>` backend, Adam's
/// state) where the code is generic: a `TypeId` comparison picks the concrete branch, and this
/// carries the value into it and back, without `unsafe`.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("the caller checked that the types are one"))
}
