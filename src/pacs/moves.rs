//! The C-STORE sub-operations of a C-MOVE arrive on our own Storage SCP, on an association
//! the PACS opens (PS3.4 C.4.2.2). The SCP hands each stored instance to the retrieve that
//! asked for it. Matching uses the Move Originator Message ID when the PACS sends it
//! (PS3.7 9.3.1.1) and the instance's UIDs always, since some PACS leave the originator out.
//!
//! A sub-operation that names its originator goes into the retrieve's cache fill, like a
//! C-GET sub-operation ([`MoveArrivals::fill_for`]); one without is stored durably by the
//! SCP and then matched by its UIDs ([`MoveArrivals::stored`]). Each retrieve's channel holds
//! one instance: the SCP waits to acknowledge the next such sub-operation until the retrieve
//! took the last one, so a slow client slows the PACS (the fill's queues do the same).

use crate::dimse::receive::MoveArrivals;
use crate::dimse::CommandSet;
use crate::model::{InstanceLocation, Selection};
use crate::store::ingest::FillWriter;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One sub-operation's instance, stored, and whether the PACS named us as its originator
/// (Move Originator Message ID present, PS3.7 9.3.1.1).
#[derive(Debug, Clone)]
pub struct Arrival {
    pub loc: InstanceLocation,
    pub with_originator: bool,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    message_id: u16,
    selection: Selection,
    tx: mpsc::Sender<Arrival>,
    fill: Option<Filling>,
}

/// Where the sub-operations that name a retrieve go.
#[derive(Debug)]
struct Filling {
    /// Our AE title, the Move Originator AE Title of our C-MOVE-RQs.
    our_ae: String,
    writer: FillWriter,
}

/// The C-MOVEs in flight, waiting for their sub-operations.
#[derive(Debug, Default, Clone)]
pub struct MoveHub {
    waiting: Arc<Mutex<(u64, Vec<Waiter>)>>,
}

/// A registered C-MOVE: receives its instances; unregisters when dropped.
#[derive(Debug)]
pub struct MoveTicket {
    hub: MoveHub,
    id: u64,
    pub rx: mpsc::Receiver<Arrival>,
}

impl Drop for MoveTicket {
    fn drop(&mut self) {
        let mut waiting = self.hub.lock();
        waiting.1.retain(|w| w.id != self.id);
    }
}

impl MoveHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Waiter>)> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a C-MOVE with message ID `message_id` for `selection` before it is sent.
    pub fn expect(&self, message_id: u16, selection: &Selection) -> MoveTicket {
        self.register(message_id, selection, None)
    }

    /// [`expect`](Self::expect), and the sub-operations that name this C-MOVE (Move
    /// Originator Message ID `message_id`, AE title `our_ae`) go into `fill`.
    pub fn expect_into(
        &self,
        message_id: u16,
        selection: &Selection,
        our_ae: &str,
        fill: FillWriter,
    ) -> MoveTicket {
        let filling = Filling {
            our_ae: our_ae.trim().to_string(),
            writer: fill,
        };
        self.register(message_id, selection, Some(filling))
    }

    fn register(
        &self,
        message_id: u16,
        selection: &Selection,
        fill: Option<Filling>,
    ) -> MoveTicket {
        let (tx, rx) = mpsc::channel(1);
        let mut waiting = self.lock();
        waiting.0 += 1;
        let id = waiting.0;
        waiting.1.push(Waiter {
            id,
            message_id,
            selection: selection.clone(),
            tx,
            fill,
        });
        MoveTicket {
            hub: self.clone(),
            id,
            rx,
        }
    }

    /// The retrieve a stored sub-operation belongs to, if any: the one whose selection holds
    /// the instance, preferring the one whose message ID the PACS named.
    pub fn route(
        &self,
        originator_id: Option<u16>,
        loc: &InstanceLocation,
    ) -> Option<mpsc::Sender<Arrival>> {
        let waiting = self.lock();
        let mut candidates = waiting.1.iter().filter(|w| w.selection.contains(loc));
        let first = candidates.next()?;
        let chosen = match originator_id {
            Some(id) if first.message_id != id => std::iter::once(first)
                .chain(candidates)
                .find(|w| w.message_id == id)
                .unwrap_or(first),
            _ => first,
        };
        Some(chosen.tx.clone())
    }
}

#[async_trait::async_trait]
impl MoveArrivals for MoveHub {
    fn fill_for(&self, rq: &CommandSet) -> Option<FillWriter> {
        let id = rq.move_originator_id?;
        let ae = rq.move_originator_ae.as_deref().map(str::trim);
        let waiting = self.lock();
        // Message IDs are unique across our associations (`Pacs::next_message_id`); the AE
        // title, when sent, must be ours too, so another system's C-MOVE to us that happens
        // to carry the same message ID is stored as an ordinary C-STORE.
        waiting.1.iter().find_map(|w| match &w.fill {
            Some(f) if w.message_id == id && ae.is_none_or(|ae| ae == f.our_ae) => {
                Some(f.writer.clone())
            }
            _ => None,
        })
    }

    async fn stored(&self, originator_id: Option<u16>, loc: InstanceLocation) {
        if let Some(tx) = self.route(originator_id, &loc) {
            let with_originator = originator_id.is_some();
            let _ = tx
                .send(Arrival {
                    loc,
                    with_originator,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(study: &str, series: &str, sop: &str) -> InstanceLocation {
        InstanceLocation {
            patient_id: "P".into(),
            study_instance_uid: study.into(),
            series_instance_uid: series.into(),
            sop_instance_uid: sop.into(),
            sop_class_uid: String::new(),
            transfer_syntax_uid: String::new(),
            blob_key: String::new(),
            size_bytes: 0,
        }
    }

    #[test]
    fn routes_by_uids_and_message_id() {
        let hub = MoveHub::default();
        let study = |s: &str| Selection {
            study_uids: vec![s.into()],
            ..Default::default()
        };
        let a = hub.expect(1, &study("1.1"));
        let b = hub.expect(2, &study("1.1"));
        let series = Selection {
            series_uids: vec!["1.2.9".into()],
            ..study("1.2")
        };
        let c = hub.expect(1, &series);
        // Without an originator: the first whose selection holds it.
        assert!(hub
            .route(None, &loc("1.1", "x", "y"))
            .unwrap()
            .same_channel(&a_tx(&hub, a.id)));
        // With one: the matching message ID wins.
        assert!(hub
            .route(Some(2), &loc("1.1", "x", "y"))
            .unwrap()
            .same_channel(&a_tx(&hub, b.id)));
        // A series selection takes only its series; an unknown study goes nowhere.
        assert!(hub
            .route(Some(1), &loc("1.2", "1.2.9", "z"))
            .unwrap()
            .same_channel(&a_tx(&hub, c.id)));
        assert!(hub.route(Some(1), &loc("1.2", "1.2.8", "z")).is_none());
        assert!(hub.route(None, &loc("9.9", "x", "y")).is_none());
        drop(a);
        drop(b);
        assert!(hub.route(None, &loc("1.1", "x", "y")).is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sub_operations_naming_our_c_move_go_into_its_fill() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = crate::store::BlobStore::open(dir.path()).await.unwrap();
        let (fill, _filled) = crate::store::ingest::cache_fill(&blobs);
        let hub = MoveHub::default();
        let study = |s: &str| Selection {
            study_uids: vec![s.into()],
            ..Default::default()
        };
        let ticket = hub.expect_into(7, &study("1.1"), "BEELDBRUG", fill);
        let plain = hub.expect(9, &study("1.2"));
        let rq = |id: Option<u16>, ae: Option<&str>| {
            let mut rq = CommandSet::request(
                crate::dimse::CommandField::CStoreRq,
                1,
                "1.2.840.10008.5.1.4.1.1.2",
            );
            rq.move_originator_id = id;
            rq.move_originator_ae = ae.map(str::to_string);
            rq
        };
        // Our message ID and AE title (padded as on the wire), or the ID alone.
        assert!(hub.fill_for(&rq(Some(7), Some("BEELDBRUG "))).is_some());
        assert!(hub.fill_for(&rq(Some(7), None)).is_some());
        // Another system's C-MOVE with the same ID, another ID, no originator, or a C-MOVE
        // registered without a fill: stored by the SCP as an ordinary C-STORE.
        assert!(hub.fill_for(&rq(Some(7), Some("OTHER"))).is_none());
        assert!(hub.fill_for(&rq(Some(8), Some("BEELDBRUG"))).is_none());
        assert!(hub.fill_for(&rq(None, None)).is_none());
        assert!(hub.fill_for(&rq(Some(9), None)).is_none());
        drop(ticket);
        assert!(
            hub.fill_for(&rq(Some(7), None)).is_none(),
            "gone with its ticket"
        );
        drop(plain);
    }

    fn a_tx(hub: &MoveHub, id: u64) -> mpsc::Sender<Arrival> {
        hub.lock().1.iter().find(|w| w.id == id).unwrap().tx.clone()
    }
}
