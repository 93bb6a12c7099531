//! The instances of a retrieve, as a front reads them: from the cache an index page at a
//! time, from a running fetch as each instance arrives. Either way the front holds a
//! bounded list, whatever the study's size.

use super::follow::{Follower, Pin};
use super::route::Answer;
use super::source::{DataSet, Source, SourceError, SourceErrorKind};
use super::{Core, CoreError, InstanceLocation, Selection};
use crate::store::Index;
use crate::trust::Caller;
use std::collections::VecDeque;
use std::sync::Arc;

/// Instances per index page while a study streams from the cache.
pub const PAGE: u32 = 256;

/// The instances a retrieve sends, in order.
#[derive(Debug)]
pub struct Instances {
    kind: Kind,
    /// The data set of the instance a fetch gave last, when still in memory (by SOP
    /// Instance UID): see [`take_data_set`](Instances::take_data_set).
    data_set: Option<(String, DataSet)>,
}

#[derive(Debug)]
enum Kind {
    Cache {
        index: Arc<dyn Index>,
        selection: Selection,
        offset: u32,
        done: bool,
        /// The study is not evicted while it streams.
        _pin: Option<Pin>,
    },
    Fetch {
        follower: Follower,
        selection: Selection,
        source_name: &'static str,
    },
    /// A patient's studies, one after the other, each answered as a study is (the cache,
    /// or a fetch started when its turn comes): a PATIENT-level retrieve.
    Studies(Box<Studies>),
}

#[derive(Debug)]
struct Studies {
    core: Arc<Core>,
    sources: Vec<Arc<dyn Source>>,
    caller: Caller,
    /// The studies whose turn has not come.
    left: VecDeque<String>,
    current: Option<Instances>,
}

impl Instances {
    pub(super) fn cache(index: Arc<dyn Index>, selection: Selection, pin: Option<Pin>) -> Self {
        Instances {
            data_set: None,
            kind: Kind::Cache {
                index,
                selection,
                offset: 0,
                done: false,
                _pin: pin,
            },
        }
    }

    pub(super) fn fetch(
        follower: Follower,
        selection: Selection,
        source_name: &'static str,
    ) -> Self {
        Instances {
            data_set: None,
            kind: Kind::Fetch {
                follower,
                selection,
                source_name,
            },
        }
    }

    /// The studies of a patient, in turn (see [`Core::patient_studies`]).
    pub(super) fn studies(
        core: Arc<Core>,
        studies: Vec<String>,
        sources: Vec<Arc<dyn Source>>,
        caller: Caller,
    ) -> Self {
        Instances {
            data_set: None,
            kind: Kind::Studies(Box::new(Studies {
                core,
                sources,
                caller,
                left: studies.into(),
                current: None,
            })),
        }
    }

    /// The next instances: up to a page from the cache, the next arrival (one) from a
    /// fetch; `None` after the last. An `Err` ends the retrieve (a fetch that ended
    /// incomplete, the index unreachable).
    pub async fn next_batch(&mut self) -> Option<Result<Vec<InstanceLocation>, CoreError>> {
        match &mut self.kind {
            Kind::Cache {
                index,
                selection,
                offset,
                done,
                ..
            } => {
                if *done {
                    return None;
                }
                let page = match index.locate_page(selection, *offset, PAGE).await {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e.into())),
                };
                *offset += PAGE;
                *done = page.len() < PAGE as usize;
                if page.is_empty() {
                    return None;
                }
                Some(Ok(page))
            }
            Kind::Fetch {
                follower,
                selection,
                source_name,
            } => loop {
                match follower.next_arrival().await {
                    // A fetch of a wider selection (a study) serves a narrower one too.
                    Ok(Some(arrival)) if selection.contains(&arrival.loc) => {
                        let loc = arrival.loc;
                        self.data_set = arrival.data_set.map(|d| (loc.sop_instance_uid.clone(), d));
                        return Some(Ok(vec![loc]));
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(why) => {
                        let e = SourceError::new(source_name, SourceErrorKind::Failed, why);
                        return Some(Err(CoreError::Source(e)));
                    }
                }
            },
            Kind::Studies(studies) => studies.next_batch().await,
        }
    }

    /// The data set of `instance` as the source delivered it (exactly the stored file's bytes
    /// after its meta group), when it came from a running fetch and is still in memory: a
    /// front may send it instead of reading the file. `None`: read the file.
    pub fn take_data_set(&mut self, instance: &InstanceLocation) -> Option<DataSet> {
        if let Kind::Studies(studies) = &mut self.kind {
            return studies.current.as_mut()?.take_data_set(instance);
        }
        match self.data_set.take() {
            Some((uid, data)) if uid == instance.sop_instance_uid => Some(data),
            other => {
                self.data_set = other;
                None
            }
        }
    }

    /// Whether the batch just returned was the last (known for the cache only: a fetch
    /// knows it is over when it says so).
    pub fn at_end(&self) -> bool {
        match &self.kind {
            Kind::Cache { done, .. } => *done,
            Kind::Fetch { .. } => false,
            Kind::Studies(studies) => {
                studies.left.is_empty() && studies.current.as_ref().is_some_and(Self::at_end)
            }
        }
    }

    /// Everything left, in one list (a C-MOVE that lost its destination names them all as
    /// failed). A running fetch is followed to its end.
    pub async fn rest(&mut self) -> Result<Vec<InstanceLocation>, CoreError> {
        let mut all = Vec::new();
        while let Some(batch) = self.next_batch().await {
            all.extend(batch?);
        }
        Ok(all)
    }
}

impl Studies {
    /// The current study's next instances; when it is done, the next study's, decided
    /// (cache or fetch) only when its turn comes, so that one fetch runs at a time.
    async fn next_batch(&mut self) -> Option<Result<Vec<InstanceLocation>, CoreError>> {
        loop {
            if let Some(current) = self.current.as_mut() {
                match Box::pin(current.next_batch()).await {
                    Some(batch) => return Some(batch),
                    None => self.current = None,
                }
            }
            let study = self.left.pop_front()?;
            let selection = Selection {
                study_uids: vec![study.clone()],
                ..Default::default()
            };
            let core = &self.core;
            self.current = Some(
                match core.resolve(&selection, &self.sources, &self.caller).await {
                    Ok(Answer::Fetch(follower)) => {
                        let name = follower.fetch().source_name;
                        crate::metrics::retrieval(name);
                        Instances::fetch(follower, selection, name)
                    }
                    Ok(Answer::Cache) => {
                        let pin = core.fetches.pin(&study);
                        Instances::cache(core.index.clone(), selection, Some(pin))
                    }
                    Err(e) => return Some(Err(CoreError::Source(e))),
                },
            );
        }
    }
}
