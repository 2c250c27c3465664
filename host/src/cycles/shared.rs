//! The plugin instances of a cycles run, created once and lent to each
//! cycle's search: a search owns its roles, so each cycle gets handles that
//! forward to the same instances (the local model stays loaded, the
//! evaluator keeps its data resident).

use std::sync::{Arc, Mutex, PoisonError};

use nas_plugin_api::{
    ChatRequest, ChatResponse, EvalOutcome, EvalRequest, Evaluator, LlmBackend, MemoryInput, MemorySelection,
    MemoryStrategy, PluginError,
};

use crate::search::Roles;

/// One instance, shared.
struct Shared<T: ?Sized>(Arc<Mutex<Box<T>>>);

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: ?Sized> Shared<T> {
    fn new(b: Box<T>) -> Self {
        Shared(Arc::new(Mutex::new(b)))
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Box<T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LlmBackend for Shared<dyn LlmBackend> {
    fn complete(&mut self, request: &ChatRequest) -> Result<ChatResponse, PluginError> {
        self.lock().complete(request)
    }
}

impl Evaluator for Shared<dyn Evaluator> {
    fn evaluate(&mut self, request: &EvalRequest) -> Result<EvalOutcome, PluginError> {
        self.lock().evaluate(request)
    }
}

impl MemoryStrategy for Shared<dyn MemoryStrategy> {
    fn select(&mut self, input: &MemoryInput) -> Result<MemorySelection, PluginError> {
        self.lock().select(input)
    }
}

/// A run's roles, lent out once per cycle.
pub struct SharedRoles {
    evaluators: Vec<Shared<dyn Evaluator>>,
    generators: Vec<Shared<dyn LlmBackend>>,
    improvers: Vec<Shared<dyn LlmBackend>>,
    memory: Shared<dyn MemoryStrategy>,
}

impl SharedRoles {
    /// Takes the run's roles.
    pub fn new(roles: Roles) -> SharedRoles {
        SharedRoles {
            evaluators: roles.evaluators.into_iter().map(Shared::new).collect(),
            generators: roles.generators.into_iter().map(Shared::new).collect(),
            improvers: roles.improvers.into_iter().map(Shared::new).collect(),
            memory: Shared::new(roles.memory),
        }
    }

    /// Handles on the same instances, for one search.
    pub fn lend(&self) -> Roles {
        Roles {
            evaluators: self.evaluators.iter().map(|s| Box::new(s.clone()) as Box<dyn Evaluator>).collect(),
            generators: self.generators.iter().map(|s| Box::new(s.clone()) as Box<dyn LlmBackend>).collect(),
            improvers: self.improvers.iter().map(|s| Box::new(s.clone()) as Box<dyn LlmBackend>).collect(),
            memory: Box::new(self.memory.clone()),
        }
    }
}
