//! How much one caller may run at once: each token (the owner's, or one
//! app's) gets a few slots per kind of work, so that one caller cannot take
//! every core or every live query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ApiError;
use crate::ops::Caller;
use crate::tokens::app_id;

/// Slots of one kind of work, counted per caller.
#[derive(Debug)]
pub struct PerCaller {
    /// Open slots by caller.
    open: Mutex<HashMap<String, usize>>,
    /// Most slots one caller may hold.
    max: usize,
    /// What a slot holds, for the refusal: `live queries open`.
    what: &'static str,
    /// What to do about a refusal: `close one first`.
    hint: &'static str,
}

impl PerCaller {
    /// At most `max` slots per caller, each holding one of `what`; a
    /// refusal says `hint`.
    pub fn new(max: usize, what: &'static str, hint: &'static str) -> Arc<Self> {
        Arc::new(Self { open: Mutex::default(), max, what, hint })
    }

    /// Takes one of `caller`'s slots, or answers 503 `busy` when it holds
    /// every one already. The slot is given back when the [`Taken`] drops.
    pub fn take(counts: &Arc<Self>, caller: &Caller) -> Result<Taken, ApiError> {
        let key = match caller {
            Caller::App(app) => app_id(app),
            Caller::Owner => "owner".to_owned(),
            Caller::Anyone => "anyone".to_owned(),
        };
        let mut open = counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key.clone()).or_default();
        if *count >= counts.max {
            return Err(ApiError {
                status: 503,
                code: "busy".into(),
                message: format!(
                    "this token has {} {} already: {}",
                    counts.max, counts.what, counts.hint
                ),
            });
        }
        *count += 1;
        Ok(Taken { counts: Arc::clone(counts), key })
    }

    /// How many slots `caller` holds (tests).
    #[cfg(test)]
    fn held(&self, key: &str) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied().unwrap_or(0)
    }
}

/// One slot of a caller, given back when dropped.
#[derive(Debug)]
pub struct Taken {
    counts: Arc<PerCaller>,
    key: String,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_slots_given_back_when_dropped() {
        let counts = PerCaller::new(2, "statements running", "wait for one to end");
        let app = Caller::App(Box::new(basic_proto::SecretKey::from_seed([1; 32]).public()));
        let first = PerCaller::take(&counts, &Caller::Owner).unwrap();
        let _second = PerCaller::take(&counts, &Caller::Owner).unwrap();
        let refused = PerCaller::take(&counts, &Caller::Owner).unwrap_err();
        assert_eq!((refused.status, refused.code.as_str()), (503, "busy"));
        assert!(refused.message.contains("2 statements running"), "{}", refused.message);
        let _app = PerCaller::take(&counts, &app).unwrap();
        drop(first);
        assert_eq!(counts.held("owner"), 1);
        let _again = PerCaller::take(&counts, &Caller::Owner).unwrap();
    }
}
