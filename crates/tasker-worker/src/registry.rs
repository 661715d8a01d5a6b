//! [`HandlerRegistry`]: which handler runs which `handler_class`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::handler::{FnHandler, StepContext, StepFailure, StepHandler};

/// The handlers a worker offers, keyed by the exact, case-sensitive `handler_class` that task
/// templates name. The worker announces the keys in its `hello`, so the orchestrator only sends
/// it steps it can run.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<String, Arc<dyn StepHandler>>,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `handler_class`, replacing (and returning) any handler already
    /// registered for it.
    pub fn register(
        &mut self,
        handler_class: impl Into<String>,
        handler: Arc<dyn StepHandler>,
    ) -> Option<Arc<dyn StepHandler>> {
        self.handlers.insert(handler_class.into(), handler)
    }

    /// Registers an async closure for `handler_class`:
    ///
    /// ```
    /// # use tasker_worker::{HandlerRegistry, StepFailure};
    /// let mut registry = HandlerRegistry::new();
    /// registry.register_fn("billing.charge", |step| async move {
    ///     let amount = step.task_context.get("amount").cloned();
    ///     amount.ok_or_else(|| StepFailure::permanent("the task has no amount"))
    /// });
    /// assert!(registry.contains("billing.charge"));
    /// ```
    pub fn register_fn<F, Fut>(
        &mut self,
        handler_class: impl Into<String>,
        function: F,
    ) -> Option<Arc<dyn StepHandler>>
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, StepFailure>> + Send + 'static,
    {
        self.register(handler_class, Arc::new(FnHandler::new(function)))
    }

    /// Removes the handler of `handler_class`, returning it.
    pub fn remove(&mut self, handler_class: &str) -> Option<Arc<dyn StepHandler>> {
        self.handlers.remove(handler_class)
    }

    /// Keeps only the handlers whose class is in `handler_classes`; returns the classes asked for
    /// that are not registered (empty when all were).
    pub fn retain_only<S: AsRef<str>>(&mut self, handler_classes: &[S]) -> Vec<String> {
        let missing = handler_classes
            .iter()
            .map(AsRef::as_ref)
            .filter(|class| !self.handlers.contains_key(*class))
            .map(str::to_owned)
            .collect();
        self.handlers.retain(|class, _| {
            handler_classes
                .iter()
                .any(|wanted| wanted.as_ref() == class.as_str())
        });
        missing
    }

    /// The handler registered for `handler_class`.
    pub fn get(&self, handler_class: &str) -> Option<&Arc<dyn StepHandler>> {
        self.handlers.get(handler_class)
    }

    /// Whether a handler is registered for `handler_class`.
    pub fn contains(&self, handler_class: &str) -> bool {
        self.handlers.contains_key(handler_class)
    }

    /// The registered classes, sorted.
    pub fn handler_classes(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// How many classes are registered.
    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    /// Whether no class is registered.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("handler_classes", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_replaces_and_filters() {
        let mut registry = HandlerRegistry::new();
        assert!(registry.is_empty());
        assert!(
            registry
                .register_fn("b", |_| async { Ok(Value::Null) })
                .is_none()
        );
        registry.register_fn("a", |_| async { Ok(Value::Bool(true)) });
        assert!(
            registry
                .register_fn("a", |_| async { Ok(Value::Null) })
                .is_some()
        );
        assert_eq!(registry.handler_classes(), vec!["a", "b"]);

        let missing = registry.retain_only(&["b", "zzz"]);
        assert_eq!(missing, vec!["zzz"]);
        assert_eq!(registry.handler_classes(), vec!["b"]);
        assert!(registry.get("a").is_none());
        assert_eq!(
            format!("{registry:?}"),
            r#"HandlerRegistry { handler_classes: ["b"] }"#
        );
    }
}
