//! The remote gateways as one source behind the cache ([`Source`]): queries go to every
//! named gateway at once and are merged; a fetch reads the study's manifest (ITI-39) and its
//! instances (RAD-75, or WADO-RS: [`super::wado`]) from the gateway that holds it.

use super::*;
use tokio::sync::oneshot;

#[async_trait::async_trait]
impl Source for RemoteSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // ITI-38 finds documents, one per study: studies, folded into patients by the core.
            query_levels: vec![Level::Study],
            retrieve: true,
            fuzzy_names: false,
            transfer_syntaxes: USUAL_SYNTAXES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The SOP classes the study's manifest references (read by ITI-39 before the fetch).
    fn classes_for(&self, selection: &Selection) -> Option<Vec<String>> {
        let manifest = self.known.manifest(selection.study_uids.first()?)?;
        let mut classes: Vec<String> = Vec::new();
        for (series, class, sop) in manifest.iter() {
            let selected =
                within(&selection.series_uids, series) && within(&selection.sop_instance_uids, sop);
            if selected && !classes.contains(class) {
                classes.push(class.clone());
            }
        }
        // The reports that come by ITI-39, as the instances they become.
        if let Some(study) = self.known.get(&selection.study_uids[0]) {
            for report in reports_selected(&study, &manifest, selection) {
                if !report.sop_class.is_empty() && !classes.contains(&report.sop_class) {
                    classes.push(report.sop_class);
                }
            }
        }
        Some(classes)
    }

    /// Without a caller nothing goes out: only the studies known already.
    async fn find(&self, query: &Query, window: usize) -> Result<Vec<Match>, SourceError> {
        Ok(self.known_rows(query, window))
    }

    async fn count(&self, _selection: &Selection) -> Result<u64, SourceError> {
        Ok(0)
    }

    async fn fetch(
        &self,
        _selection: &Selection,
        _sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError> {
        Err(SourceError::new(
            NAME,
            SourceErrorKind::NotSupported,
            "no user: nothing is fetched from another gateway",
        ))
    }

    async fn find_for(
        &self,
        caller: &Caller,
        query: &Query,
        window: usize,
    ) -> Result<Vec<Match>, SourceError> {
        let (found, mut errors) = self.find_each(caller, query, window).await;
        match (found.is_empty(), errors.is_empty()) {
            (true, false) => Err(errors.swap_remove(0)),
            _ => Ok(found),
        }
    }

    async fn find_each(
        &self,
        caller: &Caller,
        query: &Query,
        window: usize,
    ) -> (Vec<Match>, Vec<SourceError>) {
        let Some(bsn) = queried_bsn(query) else {
            // No patient to ask about (ITI-38 asks by patient): the studies known already.
            return (self.known_rows(query, window), Vec::new());
        };
        let Some(claims) = self.outgoing_claims(caller, &bsn) else {
            tracing::info!(caller = %caller.ae_title, "no user claims (UZI, role, purpose of use): other gateways are not asked");
            return (Vec::new(), Vec::new());
        };
        let peers = match self.gateways_for(caller, &claims, &bsn).await {
            Ok(peers) => peers,
            Err(e) => return (Vec::new(), vec![e]),
        };
        let correlation = correlation_of(caller);
        let asked = peers.iter().map(|peer| async {
            let started = std::time::Instant::now();
            let result = self.query_peer(peer, &claims, &correlation, &bsn).await;
            traffic(&peer.name, "iti38", &result, started);
            let (outcome, detail, studies) = match &result {
                Ok(s) => (
                    "success",
                    format!("FindDocuments: {} studies", s.len()),
                    s.iter().map(|s| s.study_uid.clone()).collect(),
                ),
                Err(e) => ("failure", e.to_string(), Vec::new()),
            };
            let outcome = Outcome {
                patient_ids: vec![bsn.clone()],
                study_uids: studies,
                result: outcome.to_string(),
                detail,
                grounds: String::new(),
            };
            self.audit(caller, Operation::Iti38, &peer.name, &correlation, outcome)
                .await;
            (peer.name.clone(), result)
        });
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for (peer, result) in join_all(asked).await {
            match result {
                Ok(found) => {
                    for study in found {
                        self.known.remember(&study);
                        let row = study.to_match();
                        if studies::matches(query, &row) {
                            rows.push(row);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "ITI-38: a gateway did not answer");
                    errors.push(e.at(&peer));
                }
            }
        }
        rows.truncate(window);
        (rows, errors)
    }

    async fn count_for(&self, caller: &Caller, selection: &Selection) -> Result<u64, SourceError> {
        let Some((study, claims)) = self.selected(caller, selection) else {
            return Ok(0);
        };
        let Some(claims) = claims else {
            tracing::info!(caller = %caller.ae_title, "no user claims: other gateways are not asked");
            return Ok(0);
        };
        let manifest = self
            .manifest(caller, &claims, &study)
            .await
            .map_err(|e| e.at(&study.peer))?;
        let images = manifest
            .iter()
            .filter(|(series, _, sop)| {
                within(&selection.series_uids, series) && within(&selection.sop_instance_uids, sop)
            })
            .count();
        Ok((images + reports_selected(&study, &manifest, selection).len()) as u64)
    }

    async fn fetch_for(
        &self,
        caller: &Caller,
        selection: &Selection,
        sink: &Sink<'_>,
    ) -> Result<FetchReport, SourceError> {
        let Some((study, claims)) = self.selected(caller, selection) else {
            return Err(SourceError::new(
                NAME,
                SourceErrorKind::Failed,
                "no remote gateway is known to hold this study",
            ));
        };
        let Some(claims) = claims else {
            return Err(SourceError::new(
                NAME,
                SourceErrorKind::NotSupported,
                "no user claims: nothing is fetched from another gateway",
            ));
        };
        let manifest = self
            .manifest(caller, &claims, &study)
            .await
            .map_err(|e| e.at(&study.peer))?;
        let peer = self.peer(&study.peer).map_err(|e| e.at(&study.peer))?;
        let documents: Vec<DocumentRequest> = manifest
            .iter()
            .filter(|(series, _, sop)| {
                within(&selection.series_uids, series) && within(&selection.sop_instance_uids, sop)
            })
            .map(|(series, _, sop)| DocumentRequest {
                home: study.home.clone(),
                repository: study.repository.clone(),
                document: sop.clone(),
                study: study.study_uid.clone(),
                series: series.clone(),
            })
            .collect();
        let classes: HashMap<String, String> = manifest
            .iter()
            .map(|(_, class, sop)| (sop.clone(), class.clone()))
            .collect();
        // The reports the manifest does not reference, by ITI-39 after the images.
        let reports = reports_selected(&study, &manifest, selection);
        let mut report = FetchReport::default();
        let correlation = correlation_of(caller);
        let mut result = Ok(());
        if !documents.is_empty() {
            result = self
                .fetch_images(
                    caller,
                    &peer,
                    &claims,
                    &correlation,
                    &study,
                    (&documents, &manifest, &classes),
                    sink,
                    &mut report,
                )
                .await;
        }
        if result.is_ok() && !reports.is_empty() {
            let before = report.received;
            let started = std::time::Instant::now();
            let fetched = self
                .read_reports(
                    &peer,
                    &claims,
                    &correlation,
                    &study,
                    &reports,
                    sink,
                    &mut report,
                )
                .await;
            let got = report.received - before;
            let (outcome, detail) = match &fetched {
                Ok(()) if got == reports.len() => ("success", String::new()),
                Ok(()) => ("partial", String::new()),
                Err(RemoteError::Cancelled) => ("cancelled", ", then the consumer left".into()),
                Err(e) => ("failure", format!(": {e}")),
            };
            if !matches!(fetched, Err(RemoteError::Cancelled)) {
                traffic(&peer.name, "iti39", &fetched, started);
            }
            self.audit(
                caller,
                Operation::Iti39,
                &peer.name,
                &correlation,
                outcome_of(
                    &study,
                    outcome,
                    format!("reports: {got} of {}{detail}", reports.len()),
                ),
            )
            .await;
            // A report that failed leaves the fetch partial; a cancel ends it.
            if let Err(RemoteError::Cancelled) = fetched {
                result = Err(RemoteError::Cancelled);
            }
        }
        // What the peer did not deliver, or delivered as something that is no instance.
        let missing = (documents.len() + reports.len()).saturating_sub(report.received);
        report.failed = missing.min(u16::MAX as usize) as u16;
        result.map_err(|e| e.at(&peer.name))?;
        report.ok = report.failed == 0;
        report.status = if report.ok { 0x0000 } else { 0xB000 };
        Ok(report)
    }
}

impl RemoteSource {
    /// A fetch's images (the manifest's instances `documents`) by RAD-75, or by WADO-RS
    /// where the peer offers DICOMweb and policy allows; audited as one outgoing call.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_images(
        &self,
        caller: &Caller,
        peer: &Participant,
        claims: &Claims,
        correlation: &str,
        study: &RemoteStudy,
        (documents, manifest, classes): (
            &[DocumentRequest],
            &[Referenced],
            &HashMap<String, String>,
        ),
        sink: &Sink<'_>,
        report: &mut FetchReport,
    ) -> Result<(), RemoteError> {
        let started = std::time::Instant::now();
        // WADO-RS where the peer offers DICOMweb and policy allows, else RAD-75.
        let by_wado_rs = self
            .prefer_wado_rs
            .then(|| peer.dicomweb_url.clone())
            .flatten();
        let (label, operation, call) = match by_wado_rs {
            Some(_) => ("WADO-RS", Operation::WadoRs, "wado-rs"),
            None => ("RAD-75", Operation::Rad75, "rad75"),
        };
        let result = match &by_wado_rs {
            Some(base) => {
                self.read_by_wado_rs(
                    peer,
                    base,
                    claims,
                    correlation,
                    study,
                    documents,
                    manifest,
                    classes,
                    sink,
                    report,
                )
                .await
            }
            None => {
                self.read_by_rad75(
                    peer,
                    claims,
                    correlation,
                    study,
                    documents,
                    classes,
                    sink,
                    report,
                )
                .await
            }
        };
        let (received, asked) = (report.received, documents.len());
        let (outcome, detail) = match &result {
            Ok(()) if received >= asked => (
                "success",
                format!("{label}: {received} of {asked} instances"),
            ),
            Ok(()) => (
                "partial",
                format!("{label}: {received} of {asked} instances"),
            ),
            Err(RemoteError::Cancelled) => (
                "cancelled",
                format!("{label}: {received} of {asked} instances, then the consumer left"),
            ),
            Err(e) => (
                "failure",
                format!("{label}: {received} of {asked} instances: {e}"),
            ),
        };
        if !matches!(result, Err(RemoteError::Cancelled)) {
            traffic(&peer.name, call, &result, started);
        }
        self.audit(
            caller,
            operation,
            &peer.name,
            correlation,
            outcome_of(study, outcome, detail),
        )
        .await;
        result
    }

    /// A fetch's instances by RAD-75: a short first request, then [`DOCUMENTS_PER_REQUEST`]
    /// at a time, each next request sent while the current answer's last parts are read.
    #[allow(clippy::too_many_arguments)]
    async fn read_by_rad75(
        &self,
        peer: &Participant,
        claims: &Claims,
        correlation: &str,
        study: &RemoteStudy,
        documents: &[DocumentRequest],
        classes: &HashMap<String, String>,
        sink: &Sink<'_>,
        report: &mut FetchReport,
    ) -> Result<(), RemoteError> {
        let batches = batches(documents);
        // The answer to the current request, opened while the previous one's last parts
        // were read (`NEXT_REQUEST_AT`).
        let mut opened: Option<Result<soap::MtomStream, RemoteError>> = None;
        for (i, batch) in batches.iter().enumerate() {
            let answer = match opened.take() {
                Some(answer) => answer,
                None => self.open_batch(peer, claims, correlation, batch).await,
            };
            let answer = answer?;
            let (near_end, near) = oneshot::channel();
            let read = self.read_batch(answer, study, classes, sink, report, near_end);
            let next = batches.get(i + 1);
            let open_next = async {
                let next = next?;
                // Fired when few parts are left, or dropped when the read ended.
                let _ = near.await;
                Some(self.open_batch(peer, claims, correlation, next).await)
            };
            tokio::pin!(read);
            tokio::pin!(open_next);
            let mut next_answer = None;
            let read = loop {
                tokio::select! {
                    read = &mut read => break read,
                    answer = &mut open_next, if next_answer.is_none() => next_answer = Some(answer),
                }
            };
            read?;
            opened = match next_answer {
                Some(answer) => answer,
                None => open_next.await,
            };
        }
        Ok(())
    }

    /// Rows of the studies known already that the query names by Study Instance UID.
    fn known_rows(&self, query: &Query, window: usize) -> Vec<Match> {
        queried_studies(query)
            .iter()
            .filter_map(|uid| self.known.get(uid))
            .map(|s| s.to_match())
            .filter(|row| studies::matches(query, row))
            .take(window)
            .collect()
    }
}

/// The RAD-75 requests of a fetch: a short first one ([`FIRST_REQUEST`]: the first
/// instances flow at once), then [`DOCUMENTS_PER_REQUEST`] at a time.
fn batches(documents: &[DocumentRequest]) -> Vec<&[DocumentRequest]> {
    let first = FIRST_REQUEST.min(documents.len());
    let (head, rest) = documents.split_at(first);
    let mut out = Vec::new();
    if !head.is_empty() {
        out.push(head);
    }
    out.extend(rest.chunks(DOCUMENTS_PER_REQUEST));
    out
}

/// The study's reports a selection names that its manifest does not reference (those come
/// with the images): every one for a whole study, else those whose series or SOP Instance
/// UID it names.
fn reports_selected(
    study: &RemoteStudy,
    manifest: &[Referenced],
    selection: &Selection,
) -> Vec<reports::RemoteReport> {
    study
        .reports
        .iter()
        .filter(|r| !manifest.iter().any(|(_, _, sop)| *sop == r.unique_id))
        .filter(|r| {
            selection.series_uids.is_empty()
                || (!r.series.is_empty() && selection.series_uids.contains(&r.series))
        })
        .filter(|r| within(&selection.sop_instance_uids, &r.sop_instance))
        .cloned()
        .collect()
}

fn within(list: &[String], uid: &str) -> bool {
    list.is_empty() || list.iter().any(|u| u == uid)
}
