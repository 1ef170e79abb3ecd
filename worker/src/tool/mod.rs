//! Tools: the [`Tool`] trait, the per-turn [`Toolset`] (built-ins plus the chat's dynamic
//! tools) and the execution of one step's calls ([`execute`]).
//!
//! Built-in tools run inside the worker. **Dynamic tools** are declared by the client at chat
//! creation and executed by the client: a step that calls one ends the turn in
//! `requires_action` and the results come back through `POST /chats/{id}/tool-results`.
//!
//! **Invariant:** every call of a step gets exactly one result (or stays pending for the
//! client), whatever happens — unknown tool, bad arguments, a failing or panicking tool, a
//! timeout, an interrupt — so the next provider request is always valid.

pub mod advisor;
pub mod agents;
pub mod builtin;
pub mod execute;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::provider::ToolSpec;

pub use execute::{execute, CallOutcome, StepExecution};

/// A tool chatd runs itself.
pub trait Tool: Send + Sync {
    /// Name, description and JSON schema offered to the model.
    fn spec(&self) -> ToolSpec;

    /// "Must run alone": a step that mixes this tool with other calls runs nothing and every
    /// call gets a policy error, so the model retries with the call on its own.
    fn exclusive(&self) -> bool {
        false
    }

    /// Runs the call. `Err` is an error result the model reads (not a turn failure). The
    /// future is dropped when the turn is interrupted: tools must be cancel-safe.
    fn call(&self, args: Value, context: ToolContext) -> BoxFuture<'static, Result<Value, String>>;
}

/// What a tool knows about the call.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    pub tool_call_id: String,
}

pub use chatd_shared::domain::DynamicTool;

/// Where a tool name leads.
pub enum ToolKind<'a> {
    Builtin(&'a Arc<dyn Tool>),
    /// `spawn_agent` or `wait_agent` ([`agents`]).
    Agent,
    /// `advisor` ([`advisor`]): runs alone, outside [`execute`].
    Advisor,
    Dynamic(&'a DynamicTool),
}

/// The tools of one turn. Built-ins (agent tools included) win a name clash with a dynamic
/// tool (the API refuses dynamic tools named like an enabled built-in only when it knows them;
/// the worker decides).
#[derive(Clone, Default)]
pub struct Toolset {
    builtin: BTreeMap<String, Arc<dyn Tool>>,
    agents: Option<agents::AgentScope>,
    advisor: Option<advisor::AdvisorScope>,
    dynamic: Vec<DynamicTool>,
}

impl Toolset {
    pub fn new(builtin: Vec<Arc<dyn Tool>>, dynamic: Vec<DynamicTool>) -> Toolset {
        let builtin: BTreeMap<String, Arc<dyn Tool>> = builtin
            .into_iter()
            .map(|tool| (tool.spec().name, tool))
            .collect();
        let dynamic = dynamic
            .into_iter()
            .filter(|tool| !builtin.contains_key(&tool.name))
            .collect();
        Toolset {
            builtin,
            agents: None,
            advisor: None,
            dynamic,
        }
    }

    /// Adds the agent tools the scope enables (dynamic tools of the same names are dropped).
    pub fn with_agents(mut self, scope: agents::AgentScope) -> Toolset {
        self.dynamic.retain(|tool| !scope.handles(&tool.name));
        self.agents = Some(scope);
        self
    }

    pub fn agents(&self) -> Option<&agents::AgentScope> {
        self.agents.as_ref()
    }

    /// Adds the `advisor` tool (a dynamic tool of that name is dropped).
    pub fn with_advisor(mut self, scope: advisor::AdvisorScope) -> Toolset {
        self.dynamic.retain(|tool| tool.name != advisor::ADVISOR);
        self.advisor = Some(scope);
        self
    }

    pub fn advisor(&self) -> Option<&advisor::AdvisorScope> {
        self.advisor.as_ref()
    }

    /// Specs offered to the model: built-ins by name, the agent tools, then dynamic tools in
    /// declared order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self.builtin.values().map(|tool| tool.spec()).collect();
        if let Some(scope) = &self.agents {
            specs.extend(scope.specs());
        }
        if let Some(scope) = &self.advisor {
            specs.push(scope.spec());
        }
        specs.extend(self.dynamic.iter().map(|tool| ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.schema.clone(),
        }));
        specs
    }

    pub fn lookup(&self, name: &str) -> Option<ToolKind<'_>> {
        if let Some(tool) = self.builtin.get(name) {
            return Some(ToolKind::Builtin(tool));
        }
        if self
            .agents
            .as_ref()
            .is_some_and(|scope| scope.handles(name))
        {
            return Some(ToolKind::Agent);
        }
        if self.advisor.is_some() && name == advisor::ADVISOR {
            return Some(ToolKind::Advisor);
        }
        self.dynamic
            .iter()
            .find(|tool| tool.name == name)
            .map(ToolKind::Dynamic)
    }

    pub fn is_exclusive(&self, name: &str) -> bool {
        match self.lookup(name) {
            Some(ToolKind::Builtin(tool)) => tool.exclusive(),
            Some(ToolKind::Dynamic(tool)) => tool.exclusive,
            Some(ToolKind::Advisor) => true,
            Some(ToolKind::Agent) | None => false,
        }
    }
}

/// The worker's enabled built-ins, by the names in its configuration (the agent tools are
/// enabled per turn, see [`agents`]). Unknown names are a configuration error (reported at
/// startup).
pub fn builtin_tools(names: &[String]) -> Result<Vec<Arc<dyn Tool>>, String> {
    names
        .iter()
        .filter(|name| !builtin::AGENT_NAMES.contains(&name.as_str()))
        .map(|name| {
            builtin::by_name(name).ok_or_else(|| {
                format!(
                    "unknown built-in tool `{name}` (available: {})",
                    builtin::NAMES.join(", ")
                )
            })
        })
        .collect()
}
