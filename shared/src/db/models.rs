//! Model configs as both sides read them.

/// The condition a model config must meet to be chosen by users and run by workers: enabled,
/// not deleted, and its provider enabled. One definition for the API (lists, checks at chat
/// create and send) and the worker (model resolution); the config is aliased `mc`.
///
/// A macro so statements stay `&'static str` (`concat!`) for the prepared-statement cache.
#[macro_export]
macro_rules! usable_model_config {
    () => {
        "(mc.enabled AND NOT mc.deleted AND EXISTS \
         (SELECT 1 FROM providers up WHERE up.id = mc.provider_id AND up.enabled))"
    };
}
