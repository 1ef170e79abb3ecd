//! Stopping a running turn from outside (interrupt, lost lease, shutdown).

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Why a turn was stopped. Stronger reasons win over weaker ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopReason {
    /// The user interrupted: persist partial output, then release.
    Interrupt,
    /// SIGTERM grace period over: release to pending, write nothing else.
    Shutdown,
    /// Another worker owns the chat now: write nothing at all.
    LeaseLost,
}

#[derive(Default)]
pub struct TurnControl {
    pub token: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl TurnControl {
    pub fn stop(&self, reason: StopReason) {
        let mut current = self
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.is_none_or(|existing| reason > existing) {
            *current = Some(reason);
        }
        drop(current);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self
            .reason
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_loss_overrides_interrupt_but_not_the_reverse() {
        let control = TurnControl::default();
        control.stop(StopReason::Interrupt);
        control.stop(StopReason::LeaseLost);
        control.stop(StopReason::Interrupt);
        assert_eq!(control.reason(), Some(StopReason::LeaseLost));
        assert!(control.token.is_cancelled());
    }
}
