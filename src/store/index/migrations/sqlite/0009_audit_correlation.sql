-- The exchange's correlation id across gateways (issue 17 item 2): the id our outgoing
-- ITI-38 / ITI-39 / RAD-75 / DICOMweb calls carry (SOAP header bb:CorrelationID, HTTP header
-- X-Correlation-ID) and an incoming call brought, so that one exchange can be followed from
-- the calling gateway's record to the answering one's. Empty for records without one; the
-- record hash covers it only when set, so the records before this migration still verify.
ALTER TABLE audit_record ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
