//! Fans each batch out to every sink's worker and registers it with the ledger. Ends when
//! capture has ended (the queue closed); dropping the outputs then lets each worker drain.

use std::sync::Arc;
use tokio::sync::mpsc;

use super::Delivery;
use super::ledger::AckLedger;

pub async fn route(
    mut queue: mpsc::Receiver<Delivery>,
    outputs: Vec<mpsc::UnboundedSender<Arc<Delivery>>>,
    ledger: Arc<AckLedger>,
) {
    let mut seq = 0u64;
    while let Some(mut delivery) = queue.recv().await {
        seq += 1;
        delivery.seq = seq;
        // An end-of-stream marker carries no lines: nothing to acknowledge.
        if delivery.is_settled() {
            // Only a cursor (every line of it was dropped by processing): no sink sees it.
            ledger.register_settled(
                &delivery.batch.container.id,
                seq,
                delivery.batch.position.clone(),
            );
            continue;
        }
        if !delivery.end_of_stream {
            ledger.register(
                &delivery.batch.container.id,
                seq,
                delivery.batch.position.clone(),
            );
        }
        let delivery = Arc::new(delivery);
        for output in &outputs {
            // A worker that is gone never acknowledges: the checkpoint stays put (no loss).
            let _ = output.send(Arc::clone(&delivery));
        }
    }
}
