//! The Shoal protocol's requests and data frames: subscribe and
//! unsubscribe by symbol name (`*` for all), sequence-numbered trades and
//! heartbeats, faults applied per data frame.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio_tungstenite::tungstenite;

use super::{Connection, Data};
use crate::exchange::CH_TRADE;
use crate::wire::{ClientRequest, ServerFrame, WILDCARD};

impl Connection {
    /// Answers a client request: subscribe, unsubscribe, or an error.
    pub(super) async fn on_shoal_request(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        match self.format().parse_request(text) {
            Ok(ClientRequest::Subscribe { symbols }) => self.subscribe(&symbols).await,
            Ok(ClientRequest::Unsubscribe { symbols }) => self.unsubscribe(&symbols).await,
            Err(message) => {
                tracing::debug!(%message, "invalid client request");
                self.send_error(&message).await
            }
        }
    }

    /// Resolves requested names to symbol indices, sending an error for each
    /// unknown one. `*` means every symbol.
    async fn resolve(&mut self, requested: &[String]) -> Result<Vec<bool>, tungstenite::Error> {
        let mut selected = vec![false; self.shared.symbols.len()];
        for name in requested {
            if name == WILDCARD {
                selected.fill(true);
            } else if let Some(index) = self.shared.symbols.iter().position(|s| **s == **name) {
                selected[index] = true;
            } else {
                self.send_error(&format!("unknown symbol: {name}")).await?;
            }
        }
        Ok(selected)
    }

    fn names(&self, selected: &[bool]) -> Vec<Arc<str>> {
        self.shared.symbols.iter().zip(selected).filter(|(_, on)| **on).map(|(symbol, _)| Arc::clone(symbol)).collect()
    }

    fn subscribed_flags(&self) -> Vec<bool> {
        self.subscribed.iter().map(|c| *c != 0).collect()
    }

    async fn subscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        self.subscribed = selected.iter().map(|on| if *on { CH_TRADE } else { 0 }).collect();
        self.update_receiver();
        self.shared.stats.subscribes.fetch_add(1, Ordering::Relaxed);
        let names = self.names(&self.subscribed_flags());
        tracing::info!(symbols = ?names, "client subscribed");
        self.send(self.format().encode(&ServerFrame::Subscribed { symbols: &names })).await
    }

    async fn unsubscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        for (on, remove) in self.subscribed.iter_mut().zip(&selected) {
            if *remove {
                *on = 0;
            }
        }
        self.update_receiver();
        self.shared.stats.unsubscribes.fetch_add(1, Ordering::Relaxed);
        let names = self.names(&selected);
        tracing::info!(symbols = ?names, remaining = ?self.names(&self.subscribed_flags()), "client unsubscribed");
        self.send(self.format().encode(&ServerFrame::Unsubscribed { symbols: &names })).await
    }

    pub(super) async fn send_error(&mut self, message: &str) -> Result<(), tungstenite::Error> {
        self.send(self.format().encode(&ServerFrame::Error { message })).await
    }

    /// Sends a Shoal data frame with the next sequence number, skipped or
    /// replaced by a malformed frame when a fault says so.
    pub(super) async fn send_data(&mut self, data: Data<'_>) -> Result<(), tungstenite::Error> {
        self.seq += 1;
        let seq = self.seq;
        if self.skip_next > 0 {
            self.skip_next -= 1;
            self.stats.trades_gapped += 1;
            return Ok(());
        }
        let ts = Utc::now();
        let frame = match data {
            Data::Trade(trade) => ServerFrame::Trade { seq, trade },
            Data::Heartbeat => ServerFrame::Heartbeat { seq, ts },
        };
        let format = self.format();
        let message = match self.malformed_now() {
            Some(kind) => {
                let flags = self.subscribed_flags();
                let fallback = self
                    .shared
                    .symbols
                    .iter()
                    .zip(&flags)
                    .find(|(_, on)| **on)
                    .or_else(|| self.shared.symbols.iter().zip(&flags).next())
                    .map_or("", |(symbol, _)| &**symbol);
                self.stats.malformed_sent += 1;
                tracing::debug!(seq, ?kind, "sending malformed frame");
                format.encode_malformed(kind, &frame, fallback)
            }
            None => {
                match data {
                    Data::Trade(_) => self.stats.trades_sent += 1,
                    Data::Heartbeat => self.stats.heartbeats_sent += 1,
                }
                format.encode(&frame)
            }
        };
        self.send(message).await
    }
}
