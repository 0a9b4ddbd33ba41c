//! A message this host works on: the newest receipt SQS gave for it, kept invisible to the
//! other hosts for as long as the work lasts, then finished (deleted, or hidden until its
//! next try) with that receipt.
//!
//! Invariants:
//! - one worker per message in this process: [`Working::begin`] admits the first receive
//!   of a message; a later receive of the same message (its invisibility ran out while
//!   SQS was unreachable, say) only hands its newer receipt to that worker, because SQS
//!   may act only on the newest receipt;
//! - while the work lasts, the keeper renews the message's invisibility every
//!   `KEEP_EVERY` for `KEEP_FOR`, with the newest receipt, however long a proof or a wait
//!   takes; a host that dies stops renewing, and the message reappears for the others;
//! - the keeper makes no call after the finish begins (the two take turns on one lock),
//!   so its last renewal cannot undo a delete or a retry time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::aws::sqs::{self, Received, SqsError};

use super::machine::{KEEP_EVERY, KEEP_FOR};

/// The messages this process works on, by message id.
#[derive(Default)]
pub struct Working {
    messages: Arc<Mutex<HashMap<String, Arc<Receipt>>>>,
}

/// The newest receipt of one message, and the turn of whoever calls SQS with it.
struct Receipt {
    newest: Mutex<String>,
    /// Held for each call the keeper makes and from the start of the finish on.
    turn: tokio::sync::Mutex<bool>,
}

impl Receipt {
    fn newest(&self) -> String {
        self.newest.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Working {
    /// The work on `m`, or `None` when this process already works on it (the newer
    /// receipt is then handed to that work).
    pub fn begin(&self, queue: &str, sqs: &aws_sdk_sqs::Client, m: &Received) -> Option<Work> {
        let Ok(mut messages) = self.messages.lock() else {
            return None;
        };
        if let Some(receipt) = messages.get(&m.id) {
            if let Ok(mut newest) = receipt.newest.lock() {
                *newest = m.receipt.clone();
            }
            tracing::debug!(message_id = %m.id, "received again while being worked on: the work goes on with the newest receipt");
            return None;
        }
        let receipt = Arc::new(Receipt {
            newest: Mutex::new(m.receipt.clone()),
            turn: tokio::sync::Mutex::new(false),
        });
        messages.insert(m.id.clone(), receipt.clone());
        let keeper = tokio::spawn(keep(
            sqs.clone(),
            queue.to_string(),
            m.id.clone(),
            receipt.clone(),
        ));
        Some(Work {
            id: m.id.clone(),
            receive_count: m.receive_count,
            sent_at: m.sent_at,
            queue: queue.to_string(),
            sqs: sqs.clone(),
            receipt,
            keeper,
            messages: self.messages.clone(),
        })
    }

    /// Whether any message is being worked on.
    pub fn any(&self) -> bool {
        self.messages.lock().map(|m| !m.is_empty()).unwrap_or(false)
    }
}

/// Renews the message's invisibility until the finish takes the turn.
async fn keep(sqs: aws_sdk_sqs::Client, queue: String, id: String, receipt: Arc<Receipt>) {
    loop {
        tokio::time::sleep(KEEP_EVERY).await;
        let finished = receipt.turn.lock().await;
        if *finished {
            return;
        }
        if let Err(e) = sqs::hide_for(&sqs, &queue, &receipt.newest(), KEEP_FOR).await {
            // It may reappear for another host, which then works on it too: completing a
            // message twice is harmless, and the next renewal tries again.
            tracing::debug!(message_id = %id, error = %e, "cannot renew the message's invisibility");
        }
        drop(finished);
    }
}

/// One message being worked on. Dropped unfinished (a task that ended early), it stops
/// the keeper and the message reappears when its last renewal runs out.
pub struct Work {
    pub id: String,
    /// How many times SQS has handed the message out.
    pub receive_count: u32,
    /// When it reached the queue.
    pub sent_at: Option<SystemTime>,
    queue: String,
    sqs: aws_sdk_sqs::Client,
    receipt: Arc<Receipt>,
    keeper: tokio::task::JoinHandle<()>,
    messages: Arc<Mutex<HashMap<String, Arc<Receipt>>>>,
}

/// How the work on a message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Done: only once what it asked for is done.
    Delete,
    /// Not done: it reappears for the next try after this long.
    RetryAfter(Duration),
}

impl Work {
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Ends the work with the newest receipt.
    pub async fn finish(self, how: Finish) -> Result<(), SqsError> {
        let mut turn = self.receipt.turn.lock().await;
        *turn = true;
        self.keeper.abort();
        let receipt = self.receipt.newest();
        match how {
            Finish::Delete => sqs::delete(&self.sqs, &self.queue, &receipt).await,
            Finish::RetryAfter(after) => {
                sqs::hide_for(&self.sqs, &self.queue, &receipt, after).await
            }
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        self.keeper.abort();
        if let Ok(mut messages) = self.messages.lock() {
            messages.remove(&self.id);
        }
    }
}
